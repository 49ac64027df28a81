//! JPEG encoding with libjpeg-turbo (the `turbojpeg` crate, bundled, SIMD).
//!
//! One [`Encoder`] lives on each capture thread. It takes YUV straight from the source (I420
//! planes as they are; NV12 by splitting only the chroma; YUYV by repacking to I420), so no RGB
//! round-trip happens. The worst-case output buffer is allocated once and reused; each frame
//! gets an exact-size copy of its bytes.
#![forbid(unsafe_code)]

use crate::capture::Picture;

/// Why a picture could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// libjpeg-turbo refused (bad parameters, out of memory).
    #[error("JPEG encoder: {0}")]
    Turbo(#[from] turbojpeg::Error),
    /// The picture's buffers are smaller than its size and strides say.
    #[error("{format} {width}x{height}: plane {plane} has {len} bytes, needs {needed}")]
    ShortPlane {
        /// Pixel format name.
        format: &'static str,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Which plane.
        plane: usize,
        /// Bytes present.
        len: usize,
        /// Bytes the geometry needs.
        needed: usize,
    },
    /// Odd or zero sizes can't be 4:2:0 subsampled.
    #[error("{width}x{height}: width and height must be even and non-zero")]
    BadSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// A reusable libjpeg-turbo compressor at a fixed quality.
pub struct Encoder {
    compressor: turbojpeg::Compressor,
    /// Bytes left free in front of every JPEG returned (a wire header's room).
    reserve: usize,
    out: Vec<u8>,
    scratch_y: Vec<u8>,
    scratch_u: Vec<u8>,
    scratch_v: Vec<u8>,
}

fn check_plane(
    format: &'static str,
    (width, height): (u32, u32),
    plane: usize,
    data: &[u8],
    stride: usize,
    row_bytes: usize,
    rows: usize,
) -> Result<(), JpegError> {
    let needed = if rows == 0 {
        0
    } else {
        stride * (rows - 1) + row_bytes
    };
    if stride < row_bytes || data.len() < needed {
        return Err(JpegError::ShortPlane {
            format,
            width,
            height,
            plane,
            len: data.len(),
            needed: needed.max(stride * rows),
        });
    }
    Ok(())
}

impl Encoder {
    /// An encoder producing 4:2:0 JPEGs at `quality` (1-100).
    pub fn new(quality: u8) -> Result<Encoder, JpegError> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(i32::from(quality.clamp(1, 100)))?;
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
        Ok(Encoder {
            compressor,
            reserve: 0,
            out: Vec::new(),
            scratch_y: Vec::new(),
            scratch_u: Vec::new(),
            scratch_v: Vec::new(),
        })
    }

    /// An encoder whose JPEGs come `reserve` bytes into the returned buffers, so that a
    /// wire header can be written in front without copying the JPEG.
    pub fn reserving(mut self, reserve: usize) -> Encoder {
        self.reserve = reserve;
        self
    }

    /// `data` behind the reserved room: one copy.
    pub fn with_room(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.reserve + data.len());
        out.resize(self.reserve, 0);
        out.extend_from_slice(data);
        out
    }

    /// Encodes `picture`, returning the JPEG bytes (after the [`Encoder::reserving`] room).
    /// A JPEG picture is returned as is.
    pub fn encode(&mut self, picture: &Picture<'_>) -> Result<Vec<u8>, JpegError> {
        let (width, height) = picture.size();
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            if let Picture::Jpeg { data, .. } = picture {
                return Ok(self.with_room(data));
            }
            return Err(JpegError::BadSize { width, height });
        }
        let (w, h) = (width as usize, height as usize);
        let size = (width, height);
        match *picture {
            Picture::Jpeg { data, .. } => Ok(self.with_room(data)),
            Picture::I420 {
                planes, strides, ..
            } => {
                check_plane("I420", size, 0, planes[0], strides[0], w, h)?;
                check_plane("I420", size, 1, planes[1], strides[1], w / 2, h / 2)?;
                check_plane("I420", size, 2, planes[2], strides[2], w / 2, h / 2)?;
                self.compress(planes, strides, w, h)
            }
            Picture::Nv12 {
                planes, strides, ..
            } => {
                check_plane("NV12", size, 0, planes[0], strides[0], w, h)?;
                check_plane("NV12", size, 1, planes[1], strides[1], w, h / 2)?;
                let (cw, ch) = (w / 2, h / 2);
                let mut u = std::mem::take(&mut self.scratch_u);
                let mut v = std::mem::take(&mut self.scratch_v);
                u.clear();
                v.clear();
                for row in 0..ch {
                    let uv = &planes[1][row * strides[1]..row * strides[1] + w];
                    u.extend(uv.iter().step_by(2));
                    v.extend(uv.iter().skip(1).step_by(2));
                }
                let result = self.compress([planes[0], &u, &v], [strides[0], cw, cw], w, h);
                self.scratch_u = u;
                self.scratch_v = v;
                result
            }
            Picture::Yuyv { data, stride, .. } => {
                check_plane("YUYV", size, 0, data, stride, w * 2, h)?;
                let (cw, ch) = (w / 2, h / 2);
                let mut y = std::mem::take(&mut self.scratch_y);
                let mut u = std::mem::take(&mut self.scratch_u);
                let mut v = std::mem::take(&mut self.scratch_v);
                y.clear();
                u.clear();
                v.clear();
                for row in 0..h {
                    let line = &data[row * stride..row * stride + w * 2];
                    y.extend(line.iter().step_by(2));
                }
                // 4:2:2 → 4:2:0: average the chroma of each pair of rows.
                for row in 0..ch {
                    let a = &data[2 * row * stride..2 * row * stride + w * 2];
                    let b = &data[(2 * row + 1) * stride..(2 * row + 1) * stride + w * 2];
                    for (qa, qb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
                        u.push((u16::from(qa[1]) + u16::from(qb[1])).div_ceil(2) as u8);
                        v.push((u16::from(qa[3]) + u16::from(qb[3])).div_ceil(2) as u8);
                    }
                }
                let result = self.compress([&y, &u, &v], [w, cw, cw], w, h);
                self.scratch_y = y;
                self.scratch_u = u;
                self.scratch_v = v;
                result
            }
        }
    }

    fn compress(
        &mut self,
        planes: [&[u8]; 3],
        strides: [usize; 3],
        width: usize,
        height: usize,
    ) -> Result<Vec<u8>, JpegError> {
        let image = turbojpeg::YuvPlanesImage {
            y_plane: planes[0],
            u_plane: planes[1],
            v_plane: planes[2],
            width,
            height,
            y_stride: strides[0],
            u_stride: strides[1],
            v_stride: strides[2],
            subsamp: turbojpeg::Subsamp::Sub2x2,
        };
        let worst = self.compressor.buf_len(width, height)?;
        if self.out.len() < worst {
            self.out.resize(worst, 0);
        }
        let len = self
            .compressor
            .compress_yuv_planes_to_slice(&image, &mut self.out)?;
        // Into a buffer of the JPEG's own size: the worst-case scratch stays here for reuse.
        Ok(self.with_room(&self.out[..len]))
    }
}

/// Decodes a JPEG to (width, height, RGB pixels) with zune-jpeg, an independent decoder,
/// for the unit tests of every module that produces JPEGs.
#[cfg(test)]
pub(crate) fn decode_for_tests(jpeg: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut d = zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(jpeg));
    let pixels = d.decode().map_err(|e| format!("{e:?}"))?;
    let info = d.info().ok_or("no JPEG header")?;
    Ok((info.width as usize, info.height as usize, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::draw::{I420Image, Yuv};

    fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        decode_for_tests(jpeg).expect("valid JPEG")
    }

    fn rgb_at(pixels: &[u8], width: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * width + x) * 3;
        [pixels[i], pixels[i + 1], pixels[i + 2]]
    }

    fn close(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (i16::from(*x) - i16::from(y)).abs() <= 12)
    }

    fn two_colour_image() -> I420Image {
        let mut img = I420Image::new(64, 32);
        img.fill(0, 0, 32, 32, Yuv::from_rgb(255, 0, 0));
        img.fill(32, 0, 32, 32, Yuv::from_rgb(0, 0, 255));
        img
    }

    #[test]
    fn i420_encodes_to_the_same_colours() {
        let img = two_colour_image();
        let jpeg = Encoder::new(90).unwrap().encode(&img.picture()).unwrap();
        let (w, h, px) = decode(&jpeg);
        assert_eq!((w, h), (64, 32));
        assert!(
            close(rgb_at(&px, w, 8, 16), [255, 0, 0]),
            "{:?}",
            rgb_at(&px, w, 8, 16)
        );
        assert!(close(rgb_at(&px, w, 56, 16), [0, 0, 255]));
    }

    #[test]
    fn nv12_and_yuyv_match_the_i420_result() {
        let img = two_colour_image();
        let (w, h) = (64usize, 32usize);
        let mut uv = Vec::new();
        for (u, v) in img.u.iter().zip(&img.v) {
            uv.extend_from_slice(&[*u, *v]);
        }
        // Odd padding on every row, as drivers do.
        let stride = w + 6;
        let mut y_padded = vec![0u8; stride * h];
        let mut uv_padded = vec![0u8; stride * h / 2];
        for r in 0..h {
            y_padded[r * stride..r * stride + w].copy_from_slice(&img.y[r * w..(r + 1) * w]);
        }
        for r in 0..h / 2 {
            uv_padded[r * stride..r * stride + w].copy_from_slice(&uv[r * w..(r + 1) * w]);
        }
        let nv12 = Picture::Nv12 {
            width: 64,
            height: 32,
            planes: [&y_padded, &uv_padded],
            strides: [stride, stride],
        };
        let yuyv = img.to_yuyv();
        let packed = Picture::Yuyv {
            width: 64,
            height: 32,
            data: &yuyv,
            stride: w * 2,
        };
        let mut enc = Encoder::new(90).unwrap();
        let reference = enc.encode(&img.picture()).unwrap();
        assert_eq!(enc.encode(&nv12).unwrap(), reference);
        assert_eq!(enc.encode(&packed).unwrap(), reference);
    }

    #[test]
    fn quality_changes_the_size() {
        let mut img = I420Image::new(128, 128);
        for (i, y) in img.y.iter_mut().enumerate() {
            *y = (i * 7 % 251) as u8;
        }
        let low = Encoder::new(10).unwrap().encode(&img.picture()).unwrap();
        let high = Encoder::new(95).unwrap().encode(&img.picture()).unwrap();
        assert!(
            high.len() > low.len() * 2,
            "q95 {} vs q10 {}",
            high.len(),
            low.len()
        );
    }

    #[test]
    fn short_planes_are_errors_not_panics() {
        let y = vec![0u8; 10];
        let pic = Picture::I420 {
            width: 64,
            height: 32,
            planes: [&y, &y, &y],
            strides: [64, 32, 32],
        };
        let e = Encoder::new(70).unwrap().encode(&pic).unwrap_err();
        assert!(e.to_string().contains("plane 0 has 10 bytes"), "{e}");
        let odd = Picture::Yuyv {
            width: 63,
            height: 32,
            data: &y,
            stride: 126,
        };
        assert!(matches!(
            Encoder::new(70).unwrap().encode(&odd),
            Err(JpegError::BadSize { .. })
        ));
    }
}
