//! MJPEG hygiene: make a webcam's JPEG frame safe to send to every browser, or refuse it.
//!
//! UVC cameras send "motion JPEG": baseline JPEGs that often leave out the Huffman tables
//! (DHT) because the AVI/MJPEG convention says the decoder knows the standard ones (ITU T.81
//! Annex K.3). Chrome and Firefox cope, Safari shows nothing. Cameras also deliver truncated
//! frames (USB packet loss, a frame cut by a format change) and zero padding after the end
//! marker. [`sanitize`] checks the marker structure, cuts the frame at its EOI, refuses what
//! a browser could not decode, and inserts the standard tables before the scan when absent.
#![forbid(unsafe_code)]

use std::borrow::Cow;

/// Why a camera frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MjpegError {
    /// Does not start with the SOI marker (FF D8).
    #[error("no JPEG start marker")]
    MissingSoi,
    /// No EOI marker (FF D9) after the scan: the frame was cut short.
    #[error("truncated JPEG (no end marker after the scan)")]
    Truncated,
    /// The marker segments do not add up.
    #[error("malformed JPEG: {0}")]
    Malformed(&'static str),
    /// The frame header says another size than the one negotiated.
    #[error("JPEG is {got_width}x{got_height}, expected {want_width}x{want_height}")]
    WrongSize {
        /// Width in the frame header.
        got_width: u32,
        /// Height in the frame header.
        got_height: u32,
        /// Negotiated width.
        want_width: u32,
        /// Negotiated height.
        want_height: u32,
    },
}

/// What [`sanitize`] learnt about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    /// Width from the frame header.
    pub width: u32,
    /// Height from the frame header.
    pub height: u32,
    /// True if the standard Huffman tables had to be inserted.
    pub huffman_inserted: bool,
}

/// Checks a camera frame and returns it ready to send: cut at its EOI, with the standard
/// Huffman tables inserted before the first scan if it had none. `expected` is the
/// negotiated size; a frame of another size is refused.
pub fn sanitize(
    data: &[u8],
    expected: Option<(u32, u32)>,
) -> Result<(Cow<'_, [u8]>, JpegInfo), MjpegError> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(MjpegError::MissingSoi);
    }
    let mut pos = 2;
    let mut has_dht = false;
    let mut size = None;
    let sos = loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        if pos >= data.len() {
            return Err(MjpegError::Truncated);
        }
        if data[pos - 1] != 0xFF {
            return Err(MjpegError::Malformed("expected a marker"));
        }
        let marker = data[pos];
        let marker_at = pos - 1;
        pos += 1;
        match marker {
            // Standalone markers: no length field.
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(MjpegError::Malformed("second start marker")),
            0xD9 => return Err(MjpegError::Malformed("end marker before any scan")),
            0x00 => return Err(MjpegError::Malformed("stuffed byte outside a scan")),
            _ => {}
        }
        if pos + 2 > data.len() {
            return Err(MjpegError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]]));
        if len < 2 {
            return Err(MjpegError::Malformed("segment length below 2"));
        }
        if pos + len > data.len() {
            return Err(MjpegError::Truncated);
        }
        let segment = &data[pos + 2..pos + len];
        match marker {
            0xDA => break marker_at,
            0xC4 => has_dht = true,
            // Start of frame, any coding (not DHT C4, JPG C8, DAC CC).
            0xC0..=0xCF if !matches!(marker, 0xC8 | 0xCC) => {
                if segment.len() < 6 {
                    return Err(MjpegError::Malformed("short frame header"));
                }
                let height = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
                let width = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
                if width == 0 || height == 0 {
                    return Err(MjpegError::Malformed("zero size in frame header"));
                }
                size = Some((width, height));
            }
            _ => {}
        }
        pos += len;
    };
    let (width, height) = size.ok_or(MjpegError::Malformed("scan before a frame header"))?;
    if let Some((want_width, want_height)) = expected {
        if (width, height) != (want_width, want_height) {
            return Err(MjpegError::WrongSize {
                got_width: width,
                got_height: height,
                want_width,
                want_height,
            });
        }
    }
    // Entropy-coded data never holds an unescaped FF D9, so the last one is the EOI; what
    // follows it is padding the camera added (often zeros).
    let scan_data = sos + 4;
    let end = data[scan_data.min(data.len())..]
        .windows(2)
        .rposition(|w| w == [0xFF, 0xD9])
        .map(|i| scan_data + i + 2)
        .ok_or(MjpegError::Truncated)?;
    let frame = &data[..end];
    let info = JpegInfo {
        width,
        height,
        huffman_inserted: !has_dht,
    };
    if has_dht {
        return Ok((Cow::Borrowed(frame), info));
    }
    let mut repaired = Vec::with_capacity(frame.len() + STANDARD_DHT.len());
    repaired.extend_from_slice(&frame[..sos]);
    repaired.extend_from_slice(&STANDARD_DHT);
    repaired.extend_from_slice(&frame[sos..]);
    Ok((Cow::Owned(repaired), info))
}

/// The DHT segment with the four standard tables of ITU T.81 Annex K.3 (luminance and
/// chrominance, DC and AC), the ones MJPEG streams assume.
pub const STANDARD_DHT: [u8; 420] = standard_dht();

const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

const fn standard_dht() -> [u8; 420] {
    let mut out = [0u8; 420];
    out[0] = 0xFF;
    out[1] = 0xC4;
    // Segment length counts itself but not the marker.
    out[2] = (418u16 >> 8) as u8;
    out[3] = (418u16 & 0xFF) as u8;
    let mut pos = 4;
    pos = put_table(&mut out, pos, 0x00, &DC_LUMA_BITS, &DC_VALUES);
    pos = put_table(&mut out, pos, 0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES);
    pos = put_table(&mut out, pos, 0x01, &DC_CHROMA_BITS, &DC_VALUES);
    pos = put_table(&mut out, pos, 0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES);
    assert!(pos == 420);
    out
}

const fn put_table(
    out: &mut [u8; 420],
    mut pos: usize,
    class_id: u8,
    bits: &[u8; 16],
    values: &[u8],
) -> usize {
    out[pos] = class_id;
    pos += 1;
    let mut i = 0;
    while i < 16 {
        out[pos] = bits[i];
        pos += 1;
        i += 1;
    }
    let mut i = 0;
    while i < values.len() {
        out[pos] = values[i];
        pos += 1;
        i += 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::draw::{I420Image, Yuv};
    use crate::encode::jpeg::Encoder;

    fn decode(jpeg: &[u8]) -> Result<Vec<u8>, String> {
        crate::encode::jpeg::decode_for_tests(jpeg).map(|(_, _, pixels)| pixels)
    }

    /// A picture with detail everywhere, so every Huffman code length gets used.
    fn busy_jpeg(width: u32, height: u32) -> Vec<u8> {
        let mut img = I420Image::new(width, height);
        for (i, y) in img.y.iter_mut().enumerate() {
            *y = ((i * 37) ^ (i / width as usize * 11)) as u8;
        }
        img.fill(
            0,
            0,
            i64::from(width / 2),
            i64::from(height / 2),
            Yuv::from_rgb(200, 30, 40),
        );
        for (i, u) in img.u.iter_mut().enumerate() {
            *u = u.wrapping_add((i * 13 % 64) as u8);
        }
        Encoder::new(85).unwrap().encode(&img.picture()).unwrap()
    }

    /// Removes every DHT segment, as MJPEG webcams send their frames.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        loop {
            assert_eq!(jpeg[pos], 0xFF);
            let marker = jpeg[pos + 1];
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[pos..]);
                return out;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
    }

    #[test]
    fn standard_tables_have_as_many_values_as_their_code_counts_say() {
        let sum = |bits: &[u8; 16]| bits.iter().map(|b| usize::from(*b)).sum::<usize>();
        assert_eq!(sum(&DC_LUMA_BITS), DC_VALUES.len());
        assert_eq!(sum(&DC_CHROMA_BITS), DC_VALUES.len());
        assert_eq!(sum(&AC_LUMA_BITS), AC_LUMA_VALUES.len());
        assert_eq!(sum(&AC_CHROMA_BITS), AC_CHROMA_VALUES.len());
    }

    #[test]
    fn a_frame_without_huffman_tables_is_repaired_to_the_same_pixels() {
        let original = busy_jpeg(320, 240);
        let stripped = strip_dht(&original);
        assert!(stripped.len() < original.len(), "the encoder wrote a DHT");
        assert!(!stripped.windows(2).any(|w| w == [0xFF, 0xC4]));
        let (repaired, info) = sanitize(&stripped, Some((320, 240))).unwrap();
        assert!(info.huffman_inserted);
        assert!(matches!(repaired, Cow::Owned(_)));
        let want = decode(&original).unwrap();
        let got = decode(&repaired).unwrap();
        assert_eq!(want.len(), 320 * 240 * 3);
        assert!(want == got, "repaired frame decodes to other pixels");
    }

    #[test]
    fn a_complete_frame_passes_through_untouched() {
        let original = busy_jpeg(64, 48);
        let (out, info) = sanitize(&original, Some((64, 48))).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, &original[..]);
        assert_eq!(
            (info.width, info.height, info.huffman_inserted),
            (64, 48, false)
        );
    }

    #[test]
    fn padding_after_the_end_marker_is_cut() {
        let original = busy_jpeg(64, 48);
        let mut padded = original.clone();
        padded.extend_from_slice(&[0u8; 1000]);
        let (out, _) = sanitize(&padded, None).unwrap();
        assert_eq!(&*out, &original[..]);
    }

    #[test]
    fn truncated_frames_are_refused() {
        let original = busy_jpeg(64, 48);
        for cut in [original.len() - 1, original.len() / 2, 300, 20, 3] {
            let e = sanitize(&original[..cut], None).unwrap_err();
            assert!(
                matches!(e, MjpegError::Truncated | MjpegError::MissingSoi),
                "cut at {cut}: {e}"
            );
        }
        // Cut short and zero-filled, as a UVC buffer looks after packet loss.
        let mut holed = original[..original.len() * 2 / 3].to_vec();
        holed.resize(original.len(), 0);
        assert_eq!(sanitize(&holed, None).unwrap_err(), MjpegError::Truncated);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(sanitize(b"", None).unwrap_err(), MjpegError::MissingSoi);
        assert_eq!(
            sanitize(&[0u8; 5000], None).unwrap_err(),
            MjpegError::MissingSoi
        );
        let mut seed = 12345u32;
        let mut random = vec![0xFF, 0xD8];
        for _ in 0..4000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            random.push((seed >> 16) as u8);
        }
        assert!(sanitize(&random, None).is_err());
        // Every prefix and a bit flipped at every position: refused or sane, never a panic.
        let original = busy_jpeg(32, 32);
        for cut in 0..original.len() {
            let _ = sanitize(&original[..cut], Some((32, 32)));
        }
        for i in 0..original.len().min(700) {
            let mut flipped = original.clone();
            flipped[i] ^= 0x5A;
            let _ = sanitize(&flipped, Some((32, 32)));
        }
    }

    #[test]
    fn a_frame_of_another_size_is_refused() {
        let original = busy_jpeg(64, 48);
        assert_eq!(
            sanitize(&original, Some((640, 480))).unwrap_err(),
            MjpegError::WrongSize {
                got_width: 64,
                got_height: 48,
                want_width: 640,
                want_height: 480
            }
        );
    }
}
