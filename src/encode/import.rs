//! Zero copy, for the JPEG and the H.264 hardware paths alike: which camera pictures a V4L2
//! memory-to-memory encoder can read in place from the camera's own buffer (a DMABUF,
//! [`crate::capture::DmaBuf`]), and that encoder opened to import them.
//!
//! Only a raw picture that goes out as captured can be: at the output size (the pipeline
//! does not scale it; the caller checks that it does not turn it either), its planes one
//! after the other from the buffer's first byte, and the encoder laying that format out
//! exactly as the camera does (line stride and whole size). Anything else is copied into the
//! encoder's own buffers, converted on the way.
#![forbid(unsafe_code)]

use super::m2m::{self, Device, Encoder, M2mError, Settings};
use crate::capture::{DmaBuf, Picture};

/// A camera buffer the encoder can read in place: its format and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Import {
    /// The V4L2 raw format (YUYV, NV12, YU12).
    pub fourcc: u32,
    /// Width and height.
    pub size: (u32, u32),
    /// Bytes per line of the first plane.
    pub stride: usize,
    /// Bytes of the whole picture, planes one after the other.
    pub image_len: usize,
}

impl Import {
    /// How an encoder would read `picture` in place from `buf`: only a raw picture at the
    /// output size `out` whose planes lie one after the other in the buffer from its start.
    pub fn of(picture: &Picture<'_>, out: (u32, u32), buf: &DmaBuf<'_>) -> Option<Import> {
        if picture.size() != out {
            return None;
        }
        let rows = out.1 as usize;
        let (fourcc, stride, image_len) = match *picture {
            Picture::Yuyv { stride, .. } => (m2m::PIX_FMT_YUYV, stride, stride * rows),
            Picture::Nv12 { strides, .. } if strides == [strides[0]; 2] => {
                (m2m::PIX_FMT_NV12, strides[0], strides[0] * rows * 3 / 2)
            }
            Picture::I420 { strides, .. }
                if strides[1] * 2 == strides[0] && strides[2] == strides[1] =>
            {
                (m2m::PIX_FMT_YUV420, strides[0], strides[0] * rows * 3 / 2)
            }
            _ => return None,
        };
        (buf.bytesused >= image_len).then_some(Import {
            fourcc,
            size: out,
            stride,
            image_len,
        })
    }

    /// `device` opened with `settings` (their size and raw format replaced by this import's,
    /// their OUTPUT queue importing DMABUFs) to read such buffers in place.
    /// [`M2mError::NotImportable`] when it does not take the format or lays it out otherwise
    /// than the camera: those pictures are to be copied.
    fn open(&self, device: &Device, mut settings: Settings) -> Result<Encoder, M2mError> {
        let raw = m2m::fourcc_str(self.fourcc);
        let refused = |why: String| M2mError::NotImportable {
            device: device.name(),
            why,
        };
        if !device.raw.contains(&self.fourcc) {
            return Err(refused(format!("it does not take {raw}")));
        }
        (settings.width, settings.height) = self.size;
        settings.input = self.fourcc;
        settings.import_dmabuf = true;
        let encoder = Encoder::open(device, &settings)?;
        let layout = encoder.layout();
        let (stride, len) = (layout.bytesperline[0] as usize, layout.picture_len());
        if (stride, len) != (self.stride, self.image_len) {
            return Err(refused(format!(
                "it lays {raw} {}x{} out with {stride} bytes a line and {len} in all, the \
                 camera with {} and {}",
                self.size.0, self.size.1, self.stride, self.image_len
            )));
        }
        Ok(encoder)
    }
}

/// `device` opened with `settings` for the pictures to reach it one of two ways: read in
/// place from the camera's buffers laid out as `lent`'s [`Import`] says (its `&str`: the
/// camera, for the log), or, without `lent`, copied into the encoder's own buffers in the
/// tightest raw format it takes ([`m2m::tight_input`]). With the encoder, how pictures
/// reach it, as the log says it.
pub fn open_encoder(
    device: &Device,
    mut settings: Settings,
    lent: Option<(&Import, &str)>,
) -> Result<(Encoder, String), M2mError> {
    match lent {
        Some((import, source)) => Ok((
            import.open(device, settings)?,
            format!("zero copy (DMABUF from {source})"),
        )),
        None => {
            settings.input = m2m::tight_input(device)?;
            let encoder = Encoder::open(device, &settings)?;
            Ok((encoder, "copied into its buffers".to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn buf(file: &std::fs::File, bytesused: usize) -> DmaBuf<'_> {
        DmaBuf {
            fd: file.as_fd(),
            bytesused,
            length: bytesused,
            source: "/dev/video0",
        }
    }

    #[test]
    fn only_a_raw_picture_at_the_output_size_laid_out_from_the_buffers_start_is_read_in_place() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let (w, h) = (64usize, 48usize);
        let y = vec![0u8; w * h];
        let c = vec![0u8; w * h / 4];
        let yu12 = Picture::I420 {
            width: w as u32,
            height: h as u32,
            planes: [&y, &c, &c],
            strides: [w, w / 2, w / 2],
        };
        let len = w * h * 3 / 2;
        assert_eq!(
            Import::of(&yu12, (64, 48), &buf(&file, len)),
            Some(Import {
                fourcc: m2m::PIX_FMT_YUV420,
                size: (64, 48),
                stride: w,
                image_len: len,
            })
        );
        assert_eq!(
            Import::of(&yu12, (32, 24), &buf(&file, len)),
            None,
            "scaled"
        );
        assert_eq!(
            Import::of(&yu12, (64, 48), &buf(&file, len - 1)),
            None,
            "short"
        );
        let yuyv = vec![0u8; w * 2 * h];
        let packed = Picture::Yuyv {
            width: w as u32,
            height: h as u32,
            data: &yuyv,
            stride: w * 2 + 64,
        };
        let import = Import::of(&packed, (64, 48), &buf(&file, (w * 2 + 64) * h)).unwrap();
        assert_eq!(
            (import.fourcc, import.stride),
            (m2m::PIX_FMT_YUYV, w * 2 + 64)
        );
        let jpeg = Picture::Jpeg {
            width: 64,
            height: 48,
            data: &yuyv,
        };
        assert_eq!(Import::of(&jpeg, (64, 48), &buf(&file, yuyv.len())), None);
    }
}
