//! The "NO SIGNAL" frame clients see while a camera is missing or failing.
//!
//! Clients keep their connection through an unplug; a placeholder at the output size, about
//! once a second, tells the viewer what is going on and that the stream itself is alive.
#![forbid(unsafe_code)]

use super::draw::{clock_text, text_width, I420Image, Yuv, WHITE};

/// Dark grey background of the placeholder.
pub const BACKGROUND: Yuv = Yuv::from_rgb(48, 48, 48);

/// Renders the placeholder at `width`×`height`: "NO SIGNAL", the time, and a short reason.
pub fn render(width: u32, height: u32, unix_now: f64, reason: &str) -> I420Image {
    let mut img = I420Image::new(width, height);
    let (w, h) = (i64::from(img.width), i64::from(img.height));
    img.fill(0, 0, w, h, BACKGROUND);
    let big = (w / 60).max(1);
    let title = "NO SIGNAL";
    img.text((w - text_width(title, big)) / 2, h / 3, big, title, WHITE);
    let small = (big / 2).max(1);
    let time = clock_text(unix_now);
    img.text(
        (w - text_width(&time, small)) / 2,
        h / 3 + 10 * big,
        small,
        &time,
        WHITE,
    );
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(((w / (6 * small)) as usize).saturating_sub(2))
        .collect();
    img.text(
        (w - text_width(&reason, small)) / 2,
        h / 3 + 10 * big + 10 * small,
        small,
        &reason,
        WHITE,
    );
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_is_output_sized_and_mostly_background() {
        let img = render(320, 240, 0.0, "opening /dev/video0: no such device");
        assert_eq!((img.width, img.height), (320, 240));
        let bg = img.y.iter().filter(|&&y| y == BACKGROUND.y).count();
        let lit = img.y.iter().filter(|&&y| y == WHITE.y).count();
        assert!(bg > img.y.len() * 8 / 10);
        assert!(lit > 200, "text drawn: {lit}");
    }
}
