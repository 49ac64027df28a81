//! Encoded media as it travels from capture to clients, and its framing on the wire.
//!
//! A frame is encoded once (JPEG) on its capture thread and then shared by every client as an
//! `Arc`. Each wire form (the seed's text message, the opt-in binary one) is also built once,
//! on first use, and cloned to clients by reference count: no copy per client.
//!
//! Text (default, the seed's format): `video:<ts>:<width>:<height>:<base64 JPEG>` and
//! `audio:<ts>:<base64 PCM s16le>`, `<ts>` being UNIX seconds with microsecond digits.
//! H.264 clients (`/stream?video=h264`) get `h264:<ts>:<width>:<height>:<key>:<base64>`
//! instead of `video:` messages, `<key>` 1 for a keyframe (SPS + PPS + IDR) and 0 otherwise,
//! the payload one Annex-B access unit.
//!
//! Binary (`/stream?format=binary`): a 16-byte little-endian header then the raw payload:
//!
//! | bytes  | video (kind 1)                    | audio (kind 2)        |
//! |--------|-----------------------------------|-----------------------|
//! | 0      | kind = 1 (JPEG), 3 (H.264)        | kind = 2              |
//! | 1      | flags: bit 0 = "NO SIGNAL" frame, | channels              |
//! |        | bit 1 = keyframe (H.264)          |                       |
//! | 2..4   | 0                                 | 0                     |
//! | 4..12  | f64 timestamp                     | f64 timestamp         |
//! | 12..14 | u16 width                         | u32 sample rate       |
//! | 14..16 | u16 height                        | (cont.)               |
//! | 16..   | JPEG / Annex-B access unit        | PCM s16le interleaved |
//!
//! Flag bits not listed are 0 and reserved: clients ignore bits they do not know.
#![forbid(unsafe_code)]

use crate::clock::format_unix;
use crate::server::wsframe::{OP_BINARY, OP_TEXT};
use async_tungstenite::tungstenite::{Bytes, Utf8Bytes};
use base64::Engine as _;
use std::sync::OnceLock;

/// Size of the binary header.
pub const BINARY_HEADER_LEN: usize = 16;
/// Binary kind byte of a video message.
pub const KIND_VIDEO: u8 = 1;
/// Binary kind byte of an audio message.
pub const KIND_AUDIO: u8 = 2;
/// Binary kind byte of an H.264 message.
pub const KIND_H264: u8 = 3;
/// Video flag bit: the frame is a "NO SIGNAL" placeholder, not a captured picture.
pub const FLAG_PLACEHOLDER: u8 = 1;
/// H.264 flag bit: the access unit is a keyframe (SPS, PPS and an IDR picture).
pub const FLAG_KEYFRAME: u8 = 2;

/// How a client wants its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    /// The seed's base64 text messages.
    Text,
    /// Header + raw payload binary messages.
    Binary,
}

impl WireFormat {
    /// Every format, for parsing and for messages that list them.
    pub const ALL: [WireFormat; 2] = [WireFormat::Text, WireFormat::Binary];

    /// The name in `?format=`, logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Text => "text",
            WireFormat::Binary => "binary",
        }
    }

    /// The format named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<WireFormat> {
        WireFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The WebSocket opcode of its messages.
    pub fn opcode(self) -> u8 {
        match self {
            WireFormat::Text => OP_TEXT,
            WireFormat::Binary => OP_BINARY,
        }
    }
}

/// One encoded video frame.
#[derive(Debug)]
pub struct VideoFrame {
    /// UNIX capture time in seconds.
    pub ts: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// True for a "NO SIGNAL" placeholder rather than a captured picture.
    pub placeholder: bool,
    /// The binary message: its 16-byte header, then the JPEG. The one buffer every form
    /// is read from (the JPEG for `/snapshot.jpg` and multipart is a slice of it).
    wire: Bytes,
    text: OnceLock<Utf8Bytes>,
}

/// One H.264 access unit.
#[derive(Debug)]
pub struct H264Unit {
    /// UNIX capture time of its picture, in seconds.
    pub ts: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// A keyframe: SPS, PPS and an IDR picture, where a decoder can start.
    pub keyframe: bool,
    /// The picture was a "NO SIGNAL" placeholder.
    pub placeholder: bool,
    /// Position in the encoder's output, from 0; a gap means a unit was lost on the way.
    pub seq: u64,
    /// The access unit, Annex-B.
    pub data: Vec<u8>,
    text: OnceLock<Utf8Bytes>,
    binary: OnceLock<Bytes>,
}

/// One chunk of audio.
#[derive(Debug)]
pub struct AudioChunk {
    /// UNIX capture time of the first sample, in seconds.
    pub ts: f64,
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// PCM s16le interleaved.
    pub pcm: Vec<u8>,
    text: OnceLock<Utf8Bytes>,
    binary: OnceLock<Bytes>,
}

fn base64_engine() -> &'static impl base64::Engine {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    ))]
    {
        static ENGINE: OnceLock<base64::engine::Simd> = OnceLock::new();
        ENGINE.get_or_init(|| base64::engine::Simd::standard(base64::engine::general_purpose::PAD))
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        &base64::engine::general_purpose::STANDARD
    }
}

/// Appends the base64 of `data` to `out`.
pub fn push_base64(out: &mut String, data: &[u8]) {
    base64_engine().encode_string(data, out);
}

impl VideoFrame {
    /// A frame of `jpeg` (copied once behind the binary header).
    pub fn new(ts: f64, width: u32, height: u32, jpeg: &[u8], placeholder: bool) -> VideoFrame {
        let mut wire = Vec::with_capacity(BINARY_HEADER_LEN + jpeg.len());
        wire.resize(BINARY_HEADER_LEN, 0);
        wire.extend_from_slice(jpeg);
        VideoFrame::behind_header(ts, width, height, wire, placeholder)
    }

    /// A frame whose JPEG already sits behind [`BINARY_HEADER_LEN`] reserved bytes of
    /// `wire` (the encoder left them): the header is written in place, nothing is copied.
    ///
    /// # Panics
    /// If `wire` is shorter than the header.
    pub fn behind_header(
        ts: f64,
        width: u32,
        height: u32,
        mut wire: Vec<u8>,
        placeholder: bool,
    ) -> VideoFrame {
        let flags = if placeholder { FLAG_PLACEHOLDER } else { 0 };
        let header = picture_header(KIND_VIDEO, flags, ts, width, height, 0);
        wire[..BINARY_HEADER_LEN].copy_from_slice(&header);
        VideoFrame {
            ts,
            width,
            height,
            placeholder,
            wire: Bytes::from(wire),
            text: OnceLock::new(),
        }
    }

    /// The JPEG image.
    pub fn jpeg(&self) -> &[u8] {
        &self.wire[BINARY_HEADER_LEN..]
    }

    /// The JPEG image as a shared buffer (no copy), for HTTP responses.
    pub fn jpeg_bytes(&self) -> Bytes {
        self.wire.slice(BINARY_HEADER_LEN..)
    }

    /// The seed's text message, built on first use.
    pub fn text(&self) -> &Utf8Bytes {
        self.text.get_or_init(|| {
            let (w, h) = (self.width.to_string(), self.height.to_string());
            text_message(&["video", &format_unix(self.ts), &w, &h], self.jpeg())
        })
    }

    /// The binary message (built with the frame).
    pub fn binary(&self) -> &Bytes {
        &self.wire
    }

    /// The message payload in `format`, built once and shared by every client.
    pub fn payload(&self, format: WireFormat) -> &[u8] {
        match format {
            WireFormat::Text => self.text().as_bytes(),
            WireFormat::Binary => self.binary(),
        }
    }
}

/// A text message: `fields` joined by `:`, then `:` and the base64 of `payload`.
fn text_message(fields: &[&str], payload: &[u8]) -> Utf8Bytes {
    let head: usize = fields.iter().map(|f| f.len() + 1).sum();
    let mut s = String::with_capacity(head + payload.len().div_ceil(3) * 4);
    for field in fields {
        s.push_str(field);
        s.push(':');
    }
    push_base64(&mut s, payload);
    Utf8Bytes::from(s)
}

/// The 16-byte binary header of a picture message.
fn picture_header(kind: u8, flags: u8, ts: f64, width: u32, height: u32, len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(BINARY_HEADER_LEN + len);
    b.extend_from_slice(&[kind, flags, 0, 0]);
    b.extend_from_slice(&ts.to_le_bytes());
    b.extend_from_slice(&(width.min(u16::MAX.into()) as u16).to_le_bytes());
    b.extend_from_slice(&(height.min(u16::MAX.into()) as u16).to_le_bytes());
    b
}

impl H264Unit {
    /// A unit ready to be framed for the wire.
    pub fn new(ts: f64, (width, height): (u32, u32), keyframe: bool, data: Vec<u8>) -> H264Unit {
        H264Unit {
            ts,
            width,
            height,
            keyframe,
            placeholder: false,
            seq: 0,
            data,
            text: OnceLock::new(),
            binary: OnceLock::new(),
        }
    }

    /// The same unit marked as a placeholder's and numbered `seq`.
    pub fn with(mut self, placeholder: bool, seq: u64) -> H264Unit {
        self.placeholder = placeholder;
        self.seq = seq;
        self
    }

    /// `h264:<ts>:<width>:<height>:<key>:<base64>`, built on first use.
    pub fn text(&self) -> &Utf8Bytes {
        self.text.get_or_init(|| {
            let (w, h) = (self.width.to_string(), self.height.to_string());
            let key = if self.keyframe { "1" } else { "0" };
            text_message(&["h264", &format_unix(self.ts), &w, &h, key], &self.data)
        })
    }

    /// The binary message (kind 3), built on first use.
    pub fn binary(&self) -> &Bytes {
        self.binary.get_or_init(|| {
            let mut flags = 0;
            if self.placeholder {
                flags |= FLAG_PLACEHOLDER;
            }
            if self.keyframe {
                flags |= FLAG_KEYFRAME;
            }
            let (ts, w, h) = (self.ts, self.width, self.height);
            let mut b = picture_header(KIND_H264, flags, ts, w, h, self.data.len());
            b.extend_from_slice(&self.data);
            Bytes::from(b)
        })
    }

    /// The message payload in `format`, built once and shared by every client.
    pub fn payload(&self, format: WireFormat) -> &[u8] {
        match format {
            WireFormat::Text => self.text().as_bytes(),
            WireFormat::Binary => self.binary(),
        }
    }
}

impl AudioChunk {
    /// A chunk ready to be framed for the wire.
    pub fn new(ts: f64, sample_rate: u32, channels: u16, pcm: Vec<u8>) -> AudioChunk {
        AudioChunk {
            ts,
            sample_rate,
            channels,
            pcm,
            text: OnceLock::new(),
            binary: OnceLock::new(),
        }
    }

    /// The seed's text message, built on first use.
    pub fn text(&self) -> &Utf8Bytes {
        self.text
            .get_or_init(|| text_message(&["audio", &format_unix(self.ts)], &self.pcm))
    }

    /// The binary message, built on first use.
    pub fn binary(&self) -> &Bytes {
        self.binary.get_or_init(|| {
            let mut b = Vec::with_capacity(BINARY_HEADER_LEN + self.pcm.len());
            b.extend_from_slice(&[KIND_AUDIO, self.channels.min(255) as u8, 0, 0]);
            b.extend_from_slice(&self.ts.to_le_bytes());
            b.extend_from_slice(&self.sample_rate.to_le_bytes());
            b.extend_from_slice(&self.pcm);
            Bytes::from(b)
        })
    }

    /// The message payload in `format`, built once and shared by every client.
    pub fn payload(&self, format: WireFormat) -> &[u8] {
        match format {
            WireFormat::Text => self.text().as_bytes(),
            WireFormat::Binary => self.binary(),
        }
    }

    /// Duration of the chunk in seconds.
    pub fn duration(&self) -> f64 {
        let frames = self.pcm.len() / (usize::from(self.channels.max(1)) * 2);
        frames as f64 / f64::from(self.sample_rate.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_one_buffer_that_every_form_is_a_slice_of() {
        let jpeg = [0xff, 0xd8, 1, 2, 3, 0xff, 0xd9];
        let mut wire = vec![0xaa; BINARY_HEADER_LEN];
        wire.extend_from_slice(&jpeg);
        let f = VideoFrame::behind_header(2.5, 320, 240, wire, false);
        assert_eq!(f.jpeg(), jpeg);
        assert_eq!(&f.binary()[BINARY_HEADER_LEN..], jpeg);
        assert_eq!(
            f.binary()[0],
            KIND_VIDEO,
            "the reserved room became the header"
        );
        // No copies: the JPEG, the snapshot body and the binary message share the bytes.
        assert_eq!(f.jpeg().as_ptr(), f.binary()[BINARY_HEADER_LEN..].as_ptr());
        assert_eq!(f.jpeg_bytes().as_ptr(), f.jpeg().as_ptr());
        let copied = VideoFrame::new(2.5, 320, 240, &jpeg, false);
        assert_eq!(copied.binary(), f.binary());
    }

    #[test]
    fn video_text_follows_the_seed_grammar() {
        let f = VideoFrame::new(1700000000.25, 640, 480, &[0xff, 0xd8, 0xff, 0xd9], false);
        assert_eq!(
            f.text().as_str(),
            "video:1700000000.250000:640:480:/9j/2Q=="
        );
    }

    #[test]
    fn audio_text_follows_the_seed_grammar() {
        let a = AudioChunk::new(12.5, 48000, 1, vec![1, 0, 255, 255]);
        assert_eq!(a.text().as_str(), "audio:12.500000:AQD//w==");
    }

    #[test]
    fn base64_matches_the_reference_engine_for_every_length() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for len in [0, 1, 2, 3, 31, 32, 33, 64, 100, 4999, 5000] {
            let mut ours = String::new();
            push_base64(&mut ours, &data[..len]);
            let reference = base64::engine::general_purpose::STANDARD.encode(&data[..len]);
            assert_eq!(ours, reference, "length {len}");
        }
    }

    #[test]
    fn binary_video_header_layout() {
        let f = VideoFrame::new(1.5, 1280, 720, &[9, 8, 7], false);
        let b = f.binary();
        assert_eq!(b.len(), BINARY_HEADER_LEN + 3);
        assert_eq!(&b[0..4], &[KIND_VIDEO, 0, 0, 0]);
        assert_eq!(f64::from_le_bytes(b[4..12].try_into().unwrap()), 1.5);
        assert_eq!(u16::from_le_bytes([b[12], b[13]]), 1280);
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 720);
        assert_eq!(&b[16..], &[9, 8, 7]);
        let placeholder = VideoFrame::new(1.5, 640, 480, &[1], true);
        assert_eq!(placeholder.binary()[1], FLAG_PLACEHOLDER);
    }

    #[test]
    fn h264_messages_carry_the_keyframe_flag_in_both_framings() {
        let key = H264Unit::new(3.5, (640, 480), true, vec![0, 0, 0, 1, 0x67]).with(false, 0);
        assert_eq!(key.text().as_str(), "h264:3.500000:640:480:1:AAAAAWc=");
        let b = key.binary();
        assert_eq!(&b[0..4], &[KIND_H264, FLAG_KEYFRAME, 0, 0]);
        assert_eq!(f64::from_le_bytes(b[4..12].try_into().unwrap()), 3.5);
        assert_eq!(u16::from_le_bytes([b[12], b[13]]), 640);
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 480);
        assert_eq!(&b[16..], &[0, 0, 0, 1, 0x67]);
        let delta = H264Unit::new(3.6, (640, 480), false, vec![1]).with(true, 1);
        assert!(delta
            .text()
            .as_str()
            .starts_with("h264:3.600000:640:480:0:"));
        assert_eq!(delta.binary()[1], FLAG_PLACEHOLDER);
    }

    #[test]
    fn binary_audio_header_layout() {
        let a = AudioChunk::new(2.25, 44100, 2, vec![1, 2, 3, 4]);
        let b = a.binary();
        assert_eq!(&b[0..4], &[KIND_AUDIO, 2, 0, 0]);
        assert_eq!(f64::from_le_bytes(b[4..12].try_into().unwrap()), 2.25);
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 44100);
        assert_eq!(&b[16..], &[1, 2, 3, 4]);
    }

    #[test]
    fn payloads_are_built_once_and_shared() {
        let f = VideoFrame::new(1.0, 16, 16, &[1; 1000], false);
        for format in WireFormat::ALL {
            assert_eq!(
                f.payload(format).as_ptr(),
                f.payload(format).as_ptr(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn wire_format_names_go_both_ways() {
        for format in WireFormat::ALL {
            assert_eq!(WireFormat::from_name(format.as_str()), Some(format));
        }
        assert_eq!(WireFormat::from_name("bogus"), None);
    }

    #[test]
    fn audio_duration_counts_frames_across_channels() {
        let a = AudioChunk::new(0.0, 48000, 2, vec![0; 960 * 4]);
        assert!((a.duration() - 0.02).abs() < 1e-9);
    }
}
