//! Drawing into planar YUV 4:2:0 images: filled boxes and a 5x7 bitmap font.
//!
//! Used by the synthetic source and by the "NO SIGNAL" placeholder, both of which draw straight
//! in the encoder's input format so no colour conversion runs per frame.
#![forbid(unsafe_code)]

/// A colour in full-range YCbCr (JPEG's colour space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuv {
    /// Luma.
    pub y: u8,
    /// Blue-difference chroma.
    pub u: u8,
    /// Red-difference chroma.
    pub v: u8,
}

impl Yuv {
    /// Converts full-range RGB with the JFIF (BT.601 full-range) matrix.
    pub const fn from_rgb(r: u8, g: u8, b: u8) -> Yuv {
        let (r, g, b) = (r as i32, g as i32, b as i32);
        let y = (77 * r + 150 * g + 29 * b + 128) >> 8;
        let u = ((-43 * r - 85 * g + 128 * b + 128) >> 8) + 128;
        let v = ((128 * r - 107 * g - 21 * b + 128) >> 8) + 128;
        Yuv {
            y: clamp(y),
            u: clamp(u),
            v: clamp(v),
        }
    }
}

const fn clamp(x: i32) -> u8 {
    if x < 0 {
        0
    } else if x > 255 {
        255
    } else {
        x as u8
    }
}

/// Black.
pub const BLACK: Yuv = Yuv::from_rgb(0, 0, 0);
/// White.
pub const WHITE: Yuv = Yuv::from_rgb(255, 255, 255);

/// An owned I420 image with tightly packed planes.
#[derive(Clone, Debug)]
pub struct I420Image {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Luma plane, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb plane, quarter size.
    pub u: Vec<u8>,
    /// Cr plane, quarter size.
    pub v: Vec<u8>,
}

impl I420Image {
    /// A black image; odd sizes are rounded down to even.
    pub fn new(width: u32, height: u32) -> I420Image {
        let (w, h) = ((width & !1) as usize, (height & !1) as usize);
        I420Image {
            width: w as u32,
            height: h as u32,
            y: vec![BLACK.y; w * h],
            u: vec![BLACK.u; w * h / 4],
            v: vec![BLACK.v; w * h / 4],
        }
    }

    /// The picture view the encoder takes.
    pub fn picture(&self) -> super::Picture<'_> {
        let w = self.width as usize;
        super::Picture::I420 {
            width: self.width,
            height: self.height,
            planes: [&self.y, &self.u, &self.v],
            strides: [w, w / 2, w / 2],
        }
    }

    /// Fills the box at (x, y) of size w×h, clipped to the image. Chroma is set per 2×2 block,
    /// so edges snap to even coordinates.
    pub fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, c: Yuv) {
        let (iw, ih) = (i64::from(self.width), i64::from(self.height));
        let (x0, y0) = (x.clamp(0, iw), y.clamp(0, ih));
        let (x1, y1) = ((x + w).clamp(0, iw), (y + h).clamp(0, ih));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let stride = self.width as usize;
        for row in y0 as usize..y1 as usize {
            self.y[row * stride + x0 as usize..row * stride + x1 as usize].fill(c.y);
        }
        let cstride = stride / 2;
        let (cx0, cx1) = ((x0 / 2) as usize, (x1 as usize).div_ceil(2));
        for row in (y0 / 2) as usize..(y1 as usize).div_ceil(2) {
            self.u[row * cstride + cx0..row * cstride + cx1].fill(c.u);
            self.v[row * cstride + cx0..row * cstride + cx1].fill(c.v);
        }
    }

    /// The same picture packed as YUYV 4:2:2 (each chroma sample used for two rows), for
    /// tests of the raw-capture paths.
    #[cfg(test)]
    pub fn to_yuyv(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut yuyv = Vec::with_capacity(w * h * 2);
        for r in 0..h {
            for x in (0..w).step_by(2) {
                let c = (r / 2) * (w / 2) + x / 2;
                yuyv.extend_from_slice(&[
                    self.y[r * w + x],
                    self.u[c],
                    self.y[r * w + x + 1],
                    self.v[c],
                ]);
            }
        }
        yuyv
    }

    /// Copies the top two rows (one chroma row) over every row below them.
    pub fn repeat_first_band(&mut self) {
        let (w, cw) = (self.width as usize, self.width as usize / 2);
        for row in 2..self.height as usize {
            self.y
                .copy_within((row % 2) * w..(row % 2 + 1) * w, row * w);
        }
        for row in 1..self.height as usize / 2 {
            self.u.copy_within(0..cw, row * cw);
            self.v.copy_within(0..cw, row * cw);
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale`×`scale`.
    /// Unknown characters draw as a box. Returns the width drawn.
    pub fn text(&mut self, x: i64, y: i64, scale: i64, text: &str, c: Yuv) -> i64 {
        let mut pen = x;
        for ch in text.chars() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill(pen + col * scale, y + r as i64 * scale, scale, scale, c);
                    }
                }
            }
            pen += 6 * scale;
        }
        pen - x
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 6 * scale - scale
}

/// The 5x7 bitmap of `ch`: seven rows, bit 4 is the leftmost column.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        ' ' => [0; 7],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Formats a UNIX time as `HH:MM:SS.mmm` (UTC) for burned-in clocks.
pub fn clock_text(unix: f64) -> String {
    let millis = (unix.max(0.0) * 1000.0).round() as u64;
    let (secs, ms) = (millis / 1000, millis % 1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_primaries_map_to_jfif_values() {
        assert_eq!(
            WHITE,
            Yuv {
                y: 255,
                u: 128,
                v: 128
            }
        );
        assert_eq!(
            BLACK,
            Yuv {
                y: 0,
                u: 128,
                v: 128
            }
        );
        let red = Yuv::from_rgb(255, 0, 0);
        assert_eq!((red.y, red.v > 200, red.u < 100), (77, true, true));
    }

    #[test]
    fn fill_clips_and_sets_chroma_blocks() {
        let mut img = I420Image::new(16, 16);
        img.fill(-4, -4, 8, 8, WHITE);
        assert_eq!(img.y[0], 255);
        assert_eq!(img.y[3 * 16 + 3], 255);
        assert_eq!(img.y[4 * 16 + 4], 0);
        let red = Yuv::from_rgb(255, 0, 0);
        img.fill(8, 8, 100, 100, red);
        assert_eq!(img.v[7 * 8 + 7], red.v);
        assert_eq!(img.v[0], 128);
    }

    #[test]
    fn the_first_band_repeats_down_the_image() {
        let red = Yuv::from_rgb(255, 0, 0);
        let mut img = I420Image::new(8, 6);
        img.fill(0, 0, 4, 2, red);
        img.repeat_first_band();
        for row in 0..6 {
            assert_eq!(
                &img.y[row * 8..row * 8 + 8],
                &[red.y, red.y, red.y, red.y, 0, 0, 0, 0]
            );
        }
        for row in 0..3 {
            assert_eq!(&img.v[row * 4..row * 4 + 4], &[red.v, red.v, 128, 128]);
        }
    }

    #[test]
    fn text_draws_lit_pixels_only_where_the_glyph_has_them() {
        let mut img = I420Image::new(64, 16);
        let drawn = img.text(0, 0, 1, "1", WHITE);
        assert_eq!(drawn, 6);
        // Row 0 of '1' is 0x04: only column 2 lit.
        assert_eq!(&img.y[0..5], &[0, 0, 255, 0, 0]);
        assert_eq!(text_width("12", 2), 22);
    }

    #[test]
    fn clock_text_formats_utc_time_of_day() {
        assert_eq!(clock_text(3661.5), "01:01:01.500");
        assert_eq!(clock_text(86399.999), "23:59:59.999");
    }
}
