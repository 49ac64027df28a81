//! From a captured picture to the JPEG on the wire, at the output size. Every JPEG comes
//! behind the [`Encoder`]'s reserved room, where the wire header goes.
//!
//! [`FrameShaper`] sits between a source and the shared [`Encoder`]. A camera JPEG at the
//! output size is checked and repaired ([`crate::encode::mjpeg`]) and passed through untouched: no
//! decode, no encode, the cheapest path a Pi has. A JPEG at another size (`--capture-width`
//! differs from `--width`) is decoded with libjpeg-turbo's DCT scaling to the smallest
//! multiple of 1/8 that is still at least the output size, resized and re-encoded. Raw
//! pictures (YUYV, NV12, I420) at another size are resized to I420 before encoding.
//!
//! An [`Orientation`] other than none turns every picture after resizing: a camera JPEG at the
//! output size losslessly (libjpeg-turbo rearranges its blocks; one whose size is not a whole
//! number of blocks for that turn is decoded and re-encoded instead), raw pictures by
//! [`Orientation::turn_plane`]. Output sizes are then [`Orientation::turned_size`] of `out`.
#![forbid(unsafe_code)]

use crate::capture::draw::I420Image;
use crate::capture::Picture;
use crate::encode::jpeg::{Encoder, JpegError};
use crate::encode::mjpeg::{self, MjpegError};
use crate::encode::orient::Orientation;

/// Why a picture did not become a frame.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// The camera's JPEG is corrupt or truncated: drop it, count it.
    #[error("{0}")]
    Corrupt(#[from] MjpegError),
    /// Encoding (or decoding a valid-looking JPEG) failed.
    #[error("{0}")]
    Jpeg(#[from] JpegError),
    /// A plane is smaller than the picture's size and strides say.
    #[error("{0}")]
    ShortPlane(String),
}

impl From<turbojpeg::Error> for ShapeError {
    fn from(e: turbojpeg::Error) -> ShapeError {
        ShapeError::Jpeg(JpegError::Turbo(e))
    }
}

/// One plane of samples: `data[row * stride + col * step]`.
#[derive(Clone, Copy)]
struct PlaneRef<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
    step: usize,
}

impl PlaneRef<'_> {
    fn check(&self, what: &str) -> Result<(), ShapeError> {
        if self.width == 0 || self.height == 0 {
            return Err(ShapeError::ShortPlane(format!("{what}: empty plane")));
        }
        let needed = (self.height - 1) * self.stride + (self.width - 1) * self.step + 1;
        if self.data.len() < needed {
            return Err(ShapeError::ShortPlane(format!(
                "{what}: plane has {} bytes, needs {needed}",
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// Per-thread state: the decoder and reusable buffers.
#[derive(Default)]
pub struct FrameShaper {
    orientation: Orientation,
    decompressor: Option<turbojpeg::Decompressor>,
    transformer: Option<turbojpeg::Transformer>,
    decoded: Vec<u8>,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Where a turn writes before the planes are swapped back.
    turned: Vec<u8>,
}

/// Which path a picture took, for statistics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Camera JPEG sent as it came (possibly with Huffman tables added).
    Passthrough,
    /// Camera JPEG turned losslessly (blocks rearranged, nothing decoded).
    Turned,
    /// Camera JPEG decoded, scaled (or turned) and re-encoded.
    Rescaled,
    /// Raw picture encoded (resized first if needed).
    Encoded,
}

impl FrameShaper {
    /// A shaper with empty buffers (they grow to the frame size once).
    pub fn new() -> FrameShaper {
        FrameShaper::default()
    }

    /// A shaper that turns every picture by `orientation`.
    pub fn turning(orientation: Orientation) -> FrameShaper {
        FrameShaper {
            orientation,
            ..FrameShaper::default()
        }
    }

    /// From now on, turns pictures by `orientation` (what is left once a camera mirrored).
    pub fn set_orientation(&mut self, orientation: Orientation) {
        self.orientation = orientation;
    }

    /// The turn this shaper does.
    pub fn orientation(&self) -> Orientation {
        self.orientation
    }

    /// True when [`shape`](Self::shape) would send `picture` as it came (a camera JPEG at
    /// the output size, not turned): nothing to encode.
    pub fn passes_through(&self, picture: &Picture<'_>, out: (u32, u32)) -> bool {
        matches!(picture, Picture::Jpeg { .. })
            && picture.size() == out
            && self.orientation.is_identity()
    }

    /// The JPEG to send for `picture` at `out` (width, height), and the path it took.
    pub fn shape(
        &mut self,
        encoder: &mut Encoder,
        picture: &Picture<'_>,
        out: (u32, u32),
    ) -> Result<(Vec<u8>, Path), ShapeError> {
        let size = picture.size();
        let turn = !self.orientation.is_identity();
        if let Picture::Jpeg { data, .. } = *picture {
            let (jpeg, _info) = mjpeg::sanitize(data, Some(size))?;
            if size == out && !turn {
                return Ok((encoder.with_room(&jpeg), Path::Passthrough));
            }
            if size == out {
                if let Some(turned) = self.turn_jpeg(&jpeg) {
                    return Ok((encoder.with_room(&turned), Path::Turned));
                }
            }
            let resized = self.decode_scaled(&jpeg, out)?;
            let turned = self.turn(resized);
            return Ok((encoder.encode(&turned.picture(self))?, Path::Rescaled));
        }
        if size == out && !turn {
            return Ok((encoder.encode(picture)?, Path::Encoded));
        }
        let sized = self.raw_to_i420(picture, out)?;
        let turned = self.turn(sized);
        Ok((encoder.encode(&turned.picture(self))?, Path::Encoded))
    }

    /// A camera JPEG turned losslessly; `None` when its blocks do not allow it (a partial
    /// block would have to move to the top or left) or libjpeg-turbo refuses it.
    fn turn_jpeg(&mut self, jpeg: &[u8]) -> Option<Vec<u8>> {
        let transformer = match self.transformer.as_mut() {
            Some(t) => t,
            None => self.transformer.insert(turbojpeg::Transformer::new().ok()?),
        };
        let mut transform = turbojpeg::Transform::op(self.orientation.jpeg_op());
        transform.perfect = true;
        transformer.transform_to_vec(&transform, jpeg).ok()
    }

    /// Turns the picture in the shaper's I420 buffers by the orientation.
    fn turn(&mut self, picture: Resized) -> Resized {
        let o = self.orientation;
        if o.is_identity() {
            return picture;
        }
        let (w, h) = (picture.width as usize, picture.height as usize);
        for (k, plane) in [&mut self.y, &mut self.u, &mut self.v]
            .into_iter()
            .enumerate()
        {
            let (pw, ph) = if k == 0 { (w, h) } else { (w / 2, h / 2) };
            o.turn_plane(plane, pw, ph, pw, &mut self.turned);
            std::mem::swap(plane, &mut self.turned);
        }
        let (width, height) = o.turned_size((picture.width, picture.height));
        Resized { width, height }
    }

    /// A raw picture as I420 at `out` in the shaper's buffers: copied at the same size,
    /// resized otherwise.
    fn raw_to_i420(
        &mut self,
        picture: &Picture<'_>,
        out: (u32, u32),
    ) -> Result<Resized, ShapeError> {
        let planes = raw_planes(picture)?
            .ok_or_else(|| ShapeError::ShortPlane("a camera JPEG has no raw planes".to_string()))?;
        if picture.size() != out {
            return self.resize_to_i420(planes, out);
        }
        // At the output size nothing is resampled: rows are copied (I420), samples picked
        // out of their interleaving (NV12, YUYV), and YUYV's full-height chroma averaged
        // in row pairs: what the resizer computes for these sizes, much faster.
        let (w, h) = (out.0 as usize, out.1 as usize);
        let targets = [&mut self.y, &mut self.u, &mut self.v];
        for (k, (p, dst)) in planes.iter().zip(targets).enumerate() {
            p.check("picture")?;
            let (dw, dh) = if k == 0 { (w, h) } else { (w / 2, h / 2) };
            copy_plane(*p, dst, dw, dh);
        }
        Ok(Resized {
            width: out.0,
            height: out.1,
        })
    }

    /// `picture` as I420 at `out` (width, height) in `dst`, for an encoder that takes raw
    /// pictures (H.264): camera JPEGs are decoded (DCT-scaled when larger), raw pictures
    /// converted and resized. `dst`'s buffers are reused.
    pub fn to_i420(
        &mut self,
        picture: &Picture<'_>,
        out: (u32, u32),
        dst: &mut I420Image,
    ) -> Result<(), ShapeError> {
        let sized = if let Picture::Jpeg { data, .. } = *picture {
            let (jpeg, _info) = mjpeg::sanitize(data, Some(picture.size()))?;
            self.decode_scaled(&jpeg, out)?
        } else {
            self.raw_to_i420(picture, out)?
        };
        let turned = self.turn(sized);
        self.hand_over((turned.width, turned.height), dst);
        Ok(())
    }

    /// Swaps the shaper's I420 result into `dst` (no copy; the shaper keeps `dst`'s old
    /// buffers for next time).
    fn hand_over(&mut self, (width, height): (u32, u32), dst: &mut I420Image) {
        dst.width = width;
        dst.height = height;
        std::mem::swap(&mut self.y, &mut dst.y);
        std::mem::swap(&mut self.u, &mut dst.u);
        std::mem::swap(&mut self.v, &mut dst.v);
    }

    fn resize_to_i420(
        &mut self,
        [y, u, v]: [PlaneRef<'_>; 3],
        (width, height): (u32, u32),
    ) -> Result<Resized, ShapeError> {
        y.check("Y")?;
        u.check("U")?;
        v.check("V")?;
        let (w, h) = (width as usize, height as usize);
        resize_plane(y, &mut self.y, w, h);
        resize_plane(u, &mut self.u, w / 2, h / 2);
        resize_plane(v, &mut self.v, w / 2, h / 2);
        Ok(Resized { width, height })
    }

    /// Decodes a JPEG to YUV with DCT scaling, then resizes to exactly `out`.
    fn decode_scaled(&mut self, jpeg: &[u8], out: (u32, u32)) -> Result<Resized, ShapeError> {
        let decompressor = match self.decompressor.as_mut() {
            Some(d) => d,
            None => self.decompressor.insert(turbojpeg::Decompressor::new()?),
        };
        let header = decompressor.read_header(jpeg)?;
        let factor = dct_scale(header.width, header.height, out);
        decompressor.set_scaling_factor(factor)?;
        let scaled = header.scaled(factor);
        let (sw, sh) = (scaled.width, scaled.height);
        let len = turbojpeg::yuv_pixels_len(sw, 1, sh, header.subsamp)?;
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.resize(len, 0);
        let result = decompressor.decompress_to_yuv(
            jpeg,
            turbojpeg::YuvImage {
                pixels: decoded.as_mut_slice(),
                width: sw,
                align: 1,
                height: sh,
                subsamp: header.subsamp,
            },
        );
        let resized = result.map_err(ShapeError::from).and_then(|()| {
            // TurboJPEG's packed YUV layout (align 1): planes padded to whole MCU samples.
            let (mcu_w, mcu_h) = (header.subsamp.mcu_width(), header.subsamp.mcu_height());
            let luma_w = sw.div_ceil(mcu_w / 8) * (mcu_w / 8);
            let luma_h = sh.div_ceil(mcu_h / 8) * (mcu_h / 8);
            let y = plane(&decoded, sw, sh, luma_w, 1);
            if header.subsamp == turbojpeg::Subsamp::Gray {
                let (w, h) = (out.0 as usize, out.1 as usize);
                y.check("Y")?;
                resize_plane(y, &mut self.y, w, h);
                self.u.clear();
                self.u.resize((w / 2) * (h / 2), 128);
                self.v.clone_from(&self.u);
                return Ok(Resized {
                    width: out.0,
                    height: out.1,
                });
            }
            let (cw, ch) = (luma_w * 8 / mcu_w, luma_h * 8 / mcu_h);
            let chroma = &decoded[(luma_w * luma_h).min(decoded.len())..];
            let u = plane(chroma, cw, ch, cw, 1);
            let v = plane(chroma.get(cw * ch..).unwrap_or(&[]), cw, ch, cw, 1);
            self.resize_to_i420([y, u, v], out)
        });
        self.decoded = decoded;
        resized
    }
}

/// A picture in the shaper's own I420 buffers.
struct Resized {
    width: u32,
    height: u32,
}

impl Resized {
    fn picture<'a>(&self, shaper: &'a FrameShaper) -> Picture<'a> {
        let w = self.width as usize;
        Picture::I420 {
            width: self.width,
            height: self.height,
            planes: [&shaper.y, &shaper.u, &shaper.v],
            strides: [w, w / 2, w / 2],
        }
    }
}

/// The Y, U and V planes of a raw picture as the resizer reads them; `None` for a JPEG.
/// YUYV's chroma is 4:2:2 (full height); resizing it to half height makes it 4:2:0.
fn raw_planes<'a>(picture: &Picture<'a>) -> Result<Option<[PlaneRef<'a>; 3]>, ShapeError> {
    let size = picture.size();
    let (w, h) = (size.0 as usize, size.1 as usize);
    if w < 2 || h < 2 {
        return Err(JpegError::BadSize {
            width: size.0,
            height: size.1,
        }
        .into());
    }
    Ok(match *picture {
        Picture::I420 {
            planes, strides, ..
        } => Some([
            plane(planes[0], w, h, strides[0], 1),
            plane(planes[1], w / 2, h / 2, strides[1], 1),
            plane(planes[2], w / 2, h / 2, strides[2], 1),
        ]),
        Picture::Nv12 {
            planes, strides, ..
        } => Some([
            plane(planes[0], w, h, strides[0], 1),
            plane(planes[1], w / 2, h / 2, strides[1], 2),
            plane(
                planes[1].get(1..).unwrap_or(&[]),
                w / 2,
                h / 2,
                strides[1],
                2,
            ),
        ]),
        Picture::Yuyv { data, stride, .. } => Some([
            plane(data, w, h, stride, 2),
            plane(data.get(1..).unwrap_or(&[]), w / 2, h, stride, 4),
            plane(data.get(3..).unwrap_or(&[]), w / 2, h, stride, 4),
        ]),
        Picture::Jpeg { .. } => None,
    })
}

fn plane(data: &[u8], width: usize, height: usize, stride: usize, step: usize) -> PlaneRef<'_> {
    PlaneRef {
        data,
        width,
        height,
        stride,
        step,
    }
}

/// The smallest DCT scaling factor n/8 that keeps the image at least as large as `out`.
pub fn dct_scale(width: usize, height: usize, out: (u32, u32)) -> turbojpeg::ScalingFactor {
    (1..=8)
        .map(|n| turbojpeg::ScalingFactor::new(n, 8))
        .find(|f| f.scale(width) >= out.0 as usize && f.scale(height) >= out.1 as usize)
        .unwrap_or(turbojpeg::ScalingFactor::ONE)
}

/// `src` into `dst` (`dw` x `dh`, packed) when `src` is `dw` wide and `dh` or `2 * dh` tall:
/// samples are picked out of their interleaving (`step`), and a plane twice as tall has its
/// row pairs averaged (rounding up, as [`resize_plane`] does for that case). The plane must
/// have passed [`PlaneRef::check`].
fn copy_plane(src: PlaneRef<'_>, dst: &mut Vec<u8>, dw: usize, dh: usize) {
    dst.clear();
    dst.reserve(dw * dh);
    let row = |r: usize| &src.data[r * src.stride..];
    for y in 0..dh {
        if src.height >= 2 * dh {
            let (a, b) = (row(2 * y), row(2 * y + 1));
            dst.extend((0..dw).map(|x| {
                (u16::from(a[x * src.step]) + u16::from(b[x * src.step])).div_ceil(2) as u8
            }));
        } else if src.step == 1 {
            dst.extend_from_slice(&row(y)[..dw]);
        } else {
            dst.extend(row(y).iter().step_by(src.step).take(dw));
        }
    }
}

/// Resamples a plane into `dst` (`dw` x `dh`, packed): a box average when shrinking by 2 or
/// more (no aliasing), bilinear otherwise. The plane must have passed [`PlaneRef::check`].
fn resize_plane(src: PlaneRef<'_>, dst: &mut Vec<u8>, dw: usize, dh: usize) {
    dst.clear();
    dst.reserve(dw * dh);
    let (sw, sh) = (src.width, src.height);
    let at = |x: usize, y: usize| u32::from(src.data[y * src.stride + x * src.step]);
    if sw >= 2 * dw && sh >= 2 * dh {
        for dy in 0..dh {
            let (y0, y1) = (dy * sh / dh, ((dy + 1) * sh / dh).max(dy * sh / dh + 1));
            for dx in 0..dw {
                let (x0, x1) = (dx * sw / dw, ((dx + 1) * sw / dw).max(dx * sw / dw + 1));
                let mut sum = 0u32;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += at(x, y);
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                dst.push(((sum + n / 2) / n) as u8);
            }
        }
        return;
    }
    // Source coordinate of each destination sample centre, in 1/256 pixels.
    let taps = |s: usize, d: usize| -> Vec<(usize, usize, u32)> {
        (0..d)
            .map(|i| {
                let pos = ((2 * i + 1) * s * 256 / (2 * d)).saturating_sub(128);
                let i0 = (pos / 256).min(s - 1);
                let i1 = (i0 + 1).min(s - 1);
                (i0, i1, (pos % 256) as u32)
            })
            .collect()
    };
    let xs = taps(sw, dw);
    for (y0, y1, fy) in taps(sh, dh) {
        for &(x0, x1, fx) in &xs {
            let top = at(x0, y0) * (256 - fx) + at(x1, y0) * fx;
            let bottom = at(x0, y1) * (256 - fx) + at(x1, y1) * fx;
            dst.push(((top * (256 - fy) + bottom * fy + 32768) >> 16) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::draw::{I420Image, Yuv};

    fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        crate::encode::jpeg::decode_for_tests(jpeg).expect("valid JPEG")
    }

    fn rgb_at(px: &[u8], width: usize, x: usize, y: usize) -> [i16; 3] {
        let i = (y * width + x) * 3;
        [px[i].into(), px[i + 1].into(), px[i + 2].into()]
    }

    fn near(a: [i16; 3], b: [i16; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 20)
    }

    /// Left half red, right half blue.
    fn halves(width: u32, height: u32) -> I420Image {
        let mut img = I420Image::new(width, height);
        let (w, h) = (i64::from(width), i64::from(height));
        img.fill(0, 0, w / 2, h, Yuv::from_rgb(255, 0, 0));
        img.fill(w / 2, 0, w / 2, h, Yuv::from_rgb(0, 0, 255));
        img
    }

    fn assert_halves(jpeg: &[u8], width: usize, height: usize) {
        let (w, h, px) = decode(jpeg);
        assert_eq!((w, h), (width, height));
        let left = rgb_at(&px, w, w / 8, h / 2);
        let right = rgb_at(&px, w, w - w / 8, h / 2);
        assert!(near(left, [255, 0, 0]), "left {left:?}");
        assert!(near(right, [0, 0, 255]), "right {right:?}");
    }

    #[test]
    fn camera_jpeg_at_the_output_size_is_passed_through_byte_for_byte() {
        let mut enc = Encoder::new(80).unwrap();
        let jpeg = enc.encode(&halves(640, 480).picture()).unwrap();
        let pic = Picture::Jpeg {
            width: 640,
            height: 480,
            data: &jpeg,
        };
        let (out, path) = FrameShaper::new()
            .shape(&mut enc, &pic, (640, 480))
            .unwrap();
        assert_eq!(path, Path::Passthrough);
        assert_eq!(out, jpeg);
    }

    /// Top half red, bottom half blue, upright.
    fn top_red(width: u32, height: u32) -> I420Image {
        let mut img = I420Image::new(width, height);
        let (w, h) = (i64::from(width), i64::from(height));
        img.fill(0, 0, w, h / 2, Yuv::from_rgb(255, 0, 0));
        img.fill(0, h / 2, w, h / 2, Yuv::from_rgb(0, 0, 255));
        img
    }

    #[test]
    fn a_turned_camera_jpeg_is_rearranged_losslessly_or_else_re_encoded() {
        let mut enc = Encoder::new(80).unwrap();
        let quarter = Orientation {
            rotation: 90,
            ..Orientation::default()
        };
        // 640x480 4:2:0 is whole 16x16 blocks: a lossless turn; 648x488 is not.
        for ((w, h), want) in [((640, 480), Path::Turned), ((648, 488), Path::Rescaled)] {
            let jpeg = enc.encode(&top_red(w, h).picture()).unwrap();
            let pic = Picture::Jpeg {
                width: w,
                height: h,
                data: &jpeg,
            };
            let mut shaper = FrameShaper::turning(quarter);
            let (out, path) = shaper.shape(&mut enc, &pic, (w, h)).unwrap();
            assert_eq!(path, want, "{w}x{h}");
            // The red top is the right side once turned clockwise.
            assert_halves_turned(&out, h as usize, w as usize);
            // H.264's I420 comes turned the same way.
            let mut i420 = I420Image::new(2, 2);
            shaper.to_i420(&pic, (w, h), &mut i420).unwrap();
            assert_eq!((i420.width, i420.height), (h, w));
            let jpeg = enc.encode(&i420.picture()).unwrap();
            assert_halves_turned(&jpeg, h as usize, w as usize);
        }
        // Raw pictures too.
        let raw = top_red(640, 480);
        let (out, path) = FrameShaper::turning(quarter)
            .shape(&mut enc, &raw.picture(), (640, 480))
            .unwrap();
        assert_eq!(path, Path::Encoded);
        assert_halves_turned(&out, 480, 640);
    }

    /// A lossless turn moves DCT coefficients without requantizing, so for a detailed 4:2:0
    /// picture of whole 16x16 blocks decode(turned) == turn(decode) sample for sample, on
    /// every plane, for the flips and the half turn. A quarter turn transposes each block,
    /// and libjpeg's IDCT rounds its column pass and its row pass differently, so there a
    /// few samples (measured: under 0.5 %) decode one level apart, never more. (Sizes that
    /// are not whole blocks are re-encoded instead: see the test above.)
    #[test]
    fn camera_jpeg_turns_are_pixel_exact_at_whole_block_sizes() {
        use crate::capture::{test::TestPattern, VideoParams, VideoSource};
        let (w, h) = (640usize, 480usize);
        let mut enc = Encoder::new(85).unwrap();
        let mut source = TestPattern::unpaced(&VideoParams::at(w as u32, h as u32, 30)).unwrap();
        let frame = source.next_frame().unwrap().unwrap();
        let jpeg = enc.encode(&frame.picture).unwrap();
        let planes = |jpeg: &[u8]| {
            let yuv = turbojpeg::decompress_to_yuv(jpeg).expect("decodes");
            let (y, uv) = yuv.pixels.split_at(w * h);
            let (u, v) = uv.split_at(w * h / 4);
            (yuv.width, yuv.height, [y.to_vec(), u.to_vec(), v.to_vec()])
        };
        let (_, _, original) = planes(&jpeg);
        let pic = Picture::Jpeg {
            width: w as u32,
            height: h as u32,
            data: &jpeg,
        };
        for o in Orientation::every() {
            let rotation = o.rotation;
            let (out, path) = FrameShaper::turning(o)
                .shape(&mut enc, &pic, (w as u32, h as u32))
                .unwrap();
            let expected = if o.is_identity() {
                Path::Passthrough
            } else {
                Path::Turned
            };
            assert_eq!(path, expected, "{o:?}");
            let (tw, th, turned) = planes(&out);
            assert_eq!(
                (tw as u32, th as u32),
                o.turned_size((w as u32, h as u32)),
                "{o:?}"
            );
            for (k, (got, src)) in turned.iter().zip(&original).enumerate() {
                let (pw, ph) = if k == 0 { (w, h) } else { (w / 2, h / 2) };
                let mut want = Vec::new();
                o.turn_plane(src, pw, ph, pw, &mut want);
                let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                let most = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap_or(0);
                if rotation % 180 == 0 {
                    assert_eq!(differ, 0, "{o:?}: plane {k} differs in {differ} samples");
                } else {
                    assert!(
                        most <= 1 && differ * 200 < got.len(),
                        "{o:?}: plane {k}: {differ} of {} samples differ, by up to {most}",
                        got.len()
                    );
                }
            }
        }
    }

    fn assert_halves_turned(jpeg: &[u8], width: usize, height: usize) {
        let (w, h, px) = decode(jpeg);
        assert_eq!((w, h), (width, height));
        let left = rgb_at(&px, w, w / 8, h / 2);
        let right = rgb_at(&px, w, w - w / 8, h / 2);
        assert!(near(left, [0, 0, 255]), "left {left:?}");
        assert!(near(right, [255, 0, 0]), "right {right:?}");
    }

    #[test]
    fn camera_jpeg_is_scaled_to_the_output_size() {
        let mut enc = Encoder::new(80).unwrap();
        let jpeg = enc.encode(&halves(1280, 720).picture()).unwrap();
        let pic = Picture::Jpeg {
            width: 1280,
            height: 720,
            data: &jpeg,
        };
        let mut shaper = FrameShaper::new();
        for out in [
            (640, 360),
            (640, 480),
            (320, 240),
            (1920, 1080),
            (1000, 600),
        ] {
            let (scaled, path) = shaper.shape(&mut enc, &pic, out).unwrap();
            assert_eq!(path, Path::Rescaled);
            assert_halves(&scaled, out.0 as usize, out.1 as usize);
        }
    }

    #[test]
    fn corrupt_camera_jpeg_is_refused() {
        let mut enc = Encoder::new(80).unwrap();
        let jpeg = enc.encode(&halves(64, 48).picture()).unwrap();
        let cut = Picture::Jpeg {
            width: 64,
            height: 48,
            data: &jpeg[..jpeg.len() / 2],
        };
        let err = FrameShaper::new()
            .shape(&mut enc, &cut, (64, 48))
            .unwrap_err();
        assert!(
            matches!(err, ShapeError::Corrupt(MjpegError::Truncated)),
            "{err}"
        );
    }

    #[test]
    fn raw_pictures_are_resized_before_encoding() {
        let img = halves(1280, 720);
        let w = 1280usize;
        let yuyv = img.to_yuyv();
        let mut uv = Vec::new();
        for (u, v) in img.u.iter().zip(&img.v) {
            uv.extend_from_slice(&[*u, *v]);
        }
        let pictures = [
            img.picture(),
            Picture::Yuyv {
                width: 1280,
                height: 720,
                data: &yuyv,
                stride: w * 2,
            },
            Picture::Nv12 {
                width: 1280,
                height: 720,
                planes: [&img.y, &uv],
                strides: [w, w],
            },
        ];
        let mut enc = Encoder::new(80).unwrap();
        let mut shaper = FrameShaper::new();
        for pic in &pictures {
            for out in [(640, 360), (320, 180), (960, 540), (1920, 1080)] {
                let (jpeg, path) = shaper.shape(&mut enc, pic, out).unwrap();
                assert_eq!(path, Path::Encoded);
                assert_halves(&jpeg, out.0 as usize, out.1 as usize);
            }
        }
    }

    #[test]
    fn every_picture_kind_becomes_i420_at_the_output_size() {
        let img = halves(1280, 720);
        let w = 1280usize;
        let yuyv = img.to_yuyv();
        let mut uv = Vec::new();
        for (u, v) in img.u.iter().zip(&img.v) {
            uv.extend_from_slice(&[*u, *v]);
        }
        let mut enc = Encoder::new(90).unwrap();
        let camera_jpeg = enc.encode(&img.picture()).unwrap();
        let pictures = [
            img.picture(),
            Picture::Yuyv {
                width: 1280,
                height: 720,
                data: &yuyv,
                stride: w * 2,
            },
            Picture::Nv12 {
                width: 1280,
                height: 720,
                planes: [&img.y, &uv],
                strides: [w, w],
            },
            Picture::Jpeg {
                width: 1280,
                height: 720,
                data: &camera_jpeg,
            },
        ];
        let mut shaper = FrameShaper::new();
        let mut dst = I420Image::new(2, 2);
        for pic in &pictures {
            for out in [(1280, 720), (640, 360)] {
                shaper.to_i420(pic, out, &mut dst).unwrap();
                assert_eq!((dst.width, dst.height), out);
                assert_eq!(dst.y.len(), (out.0 * out.1) as usize);
                assert_eq!(dst.u.len(), (out.0 * out.1 / 4) as usize);
                let jpeg = enc.encode(&dst.picture()).unwrap();
                assert_halves(&jpeg, out.0 as usize, out.1 as usize);
            }
        }
    }

    #[test]
    fn the_same_size_fast_path_matches_the_resizer_sample_for_sample() {
        let (w, h) = (64usize, 48usize);
        let mut seed = 7u32;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect()
        };
        let yuyv = noise(w * 2 * h + 8);
        let (y, uv) = (noise(72 * h), noise(72 * h / 2));
        let (u, v) = (noise(40 * h / 2), noise(40 * h / 2));
        let pictures = [
            Picture::Yuyv {
                width: w as u32,
                height: h as u32,
                data: &yuyv,
                stride: w * 2,
            },
            Picture::Nv12 {
                width: w as u32,
                height: h as u32,
                planes: [&y, &uv],
                strides: [72, 72],
            },
            Picture::I420 {
                width: w as u32,
                height: h as u32,
                planes: [&y, &u, &v],
                strides: [72, 40, 40],
            },
        ];
        let out = (w as u32, h as u32);
        for pic in &pictures {
            let mut fast = I420Image::new(2, 2);
            let mut shaper = FrameShaper::new();
            shaper.to_i420(pic, out, &mut fast).unwrap();
            let mut slow = FrameShaper::new();
            let planes = raw_planes(pic).unwrap().unwrap();
            slow.resize_to_i420(planes, out).unwrap();
            assert_eq!(fast.y, slow.y, "{pic:?}");
            assert_eq!(fast.u, slow.u, "{pic:?}");
            assert_eq!(fast.v, slow.v, "{pic:?}");
        }
    }

    #[test]
    fn short_raw_planes_are_errors_not_panics() {
        let data = vec![0u8; 1000];
        let pic = Picture::Yuyv {
            width: 640,
            height: 480,
            data: &data,
            stride: 1280,
        };
        let mut enc = Encoder::new(80).unwrap();
        let err = FrameShaper::new()
            .shape(&mut enc, &pic, (320, 240))
            .unwrap_err();
        assert!(matches!(err, ShapeError::ShortPlane(_)), "{err}");
    }

    #[test]
    fn dct_scaling_stops_at_the_output_size() {
        let eighths = |f: turbojpeg::ScalingFactor| f.num() * 8 / f.denom();
        assert_eq!(eighths(dct_scale(1280, 720, (640, 360))), 4);
        assert_eq!(eighths(dct_scale(1280, 720, (640, 480))), 6);
        assert_eq!(eighths(dct_scale(1920, 1080, (320, 240))), 2);
        assert_eq!(eighths(dct_scale(640, 480, (1280, 720))), 8);
    }

    #[test]
    fn resizing_a_flat_plane_keeps_its_value_and_a_ramp_stays_monotonic() {
        let flat = vec![77u8; 100 * 60];
        let mut out = Vec::new();
        for (dw, dh) in [(50, 30), (10, 6), (160, 90), (99, 59)] {
            resize_plane(plane(&flat, 100, 60, 100, 1), &mut out, dw, dh);
            assert_eq!(out.len(), dw * dh);
            assert!(out.iter().all(|&v| v == 77), "{dw}x{dh}");
        }
        let ramp: Vec<u8> = (0..256).map(|i| i as u8).collect();
        for dw in [64, 128, 200, 512] {
            resize_plane(plane(&ramp, 256, 1, 256, 1), &mut out, dw, 1);
            assert!(out.windows(2).all(|p| p[0] <= p[1]), "{dw}: {out:?}");
        }
    }
}
