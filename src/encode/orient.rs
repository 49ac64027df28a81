//! Picture orientation in the pipeline: `--rotation`, `--hflip`, `--vflip` for cameras that
//! cannot do it themselves.
//!
//! The flips come first, then the clockwise rotation (a camera mounted upside down is
//! `--rotation 180`, which equals both flips). The eight results are the symmetries of a
//! rectangle; each is an affine map of pixel coordinates, and the same map chooses
//! libjpeg-turbo's lossless transform for camera JPEGs (MCU blocks are rearranged, nothing is
//! decoded, so MJPEG passthrough stays cheap) and drives the plane copy for raw pictures.
//! With 90 or 270 the picture's width and height swap, and so do the sizes on the wire.
#![forbid(unsafe_code)]

use turbojpeg::TransformOp;

/// How pictures are turned before they are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Orientation {
    /// Clockwise degrees: 0, 90, 180 or 270.
    pub rotation: u16,
    /// Mirror left-right (before rotating).
    pub hflip: bool,
    /// Mirror top-bottom (before rotating).
    pub vflip: bool,
}

/// `dst = (ax·x + bx·y + cx, ay·x + by·y + cy)` for a source pixel (x, y); the constants are
/// multiples of the source's `width − 1` and `height − 1`, kept symbolic in [`Affine::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Affine {
    ax: i64,
    bx: i64,
    ay: i64,
    by: i64,
}

impl Affine {
    /// The offsets that put the mapped picture at (0, 0) for a `w`×`h` source.
    fn offsets(&self, w: i64, h: i64) -> (i64, i64) {
        let min = |a: i64, b: i64| a.min(0) * (w - 1) + b.min(0) * (h - 1);
        (-min(self.ax, self.bx), -min(self.ay, self.by))
    }
}

impl Orientation {
    /// The rotations `--rotation` accepts.
    pub const ROTATIONS: [u16; 4] = [0, 90, 180, 270];

    /// All 16 combinations of the flags (8 distinct orientations, each twice), for tests.
    pub fn every() -> impl Iterator<Item = Orientation> {
        Orientation::ROTATIONS.into_iter().flat_map(|rotation| {
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .map(move |(hflip, vflip)| Orientation {
                    rotation,
                    hflip,
                    vflip,
                })
        })
    }

    /// Nothing to do.
    pub fn is_identity(&self) -> bool {
        self.map() == Orientation::default().map()
    }

    /// The size of a `(width, height)` picture once turned.
    pub fn turned_size(&self, (width, height): (u32, u32)) -> (u32, u32) {
        if self.rotation % 180 == 90 {
            (height, width)
        } else {
            (width, height)
        }
    }

    /// The same orientation as mirroring first (`hflip`, `vflip`: what a camera can do
    /// itself) and then what is left: at most a quarter turn (a half turn is both flips).
    pub fn split_mirror(&self) -> (bool, bool, Orientation) {
        let half = self.rotation % 360 >= 180;
        let rest = Orientation {
            rotation: self.rotation % 180,
            hflip: false,
            vflip: false,
        };
        (self.hflip ^ half, self.vflip ^ half, rest)
    }

    /// The coordinate map: flips, then rotation.
    fn map(&self) -> Affine {
        // Start with identity; each step maps the current destination coordinates.
        let (mut ax, mut bx, mut ay, mut by) = (1i64, 0i64, 0i64, 1i64);
        if self.hflip {
            (ax, bx) = (-ax, -bx);
        }
        if self.vflip {
            (ay, by) = (-ay, -by);
        }
        for _ in 0..(self.rotation / 90) % 4 {
            // Clockwise quarter turn: (x, y) → (−y, x) before re-anchoring at (0, 0).
            (ax, bx, ay, by) = (-ay, -by, ax, bx);
        }
        Affine { ax, bx, ay, by }
    }

    /// libjpeg-turbo's lossless transform doing the same.
    pub fn jpeg_op(&self) -> TransformOp {
        let want = self.map();
        let rot = |rotation, hflip| Orientation {
            rotation,
            hflip,
            vflip: false,
        };
        let candidates = [
            (TransformOp::None, rot(0, false)),
            (TransformOp::Hflip, rot(0, true)),
            (TransformOp::Vflip, rot(180, true)),
            (TransformOp::Rot90, rot(90, false)),
            (TransformOp::Rot180, rot(180, false)),
            (TransformOp::Rot270, rot(270, false)),
            (TransformOp::Transpose, rot(270, true)),
            (TransformOp::Transverse, rot(90, true)),
        ];
        candidates
            .into_iter()
            .find(|(_, o)| o.map() == want)
            .map_or(TransformOp::None, |(op, _)| op)
    }

    /// Turns one plane of `width`×`height` samples (rows `stride` apart) into `dst`, which
    /// becomes the turned plane with rows packed (`turned_size` wide).
    ///
    /// # Panics
    /// If `src` is shorter than `(height − 1) · stride + width`.
    pub fn turn_plane(
        &self,
        src: &[u8],
        width: usize,
        height: usize,
        stride: usize,
        dst: &mut Vec<u8>,
    ) {
        let m = self.map();
        let (w, h) = (width as i64, height as i64);
        let (dw, _) = self.turned_size((width as u32, height as u32));
        let dw = dw as i64;
        let (cx, cy) = m.offsets(w, h);
        dst.clear();
        dst.resize(width * height, 0);
        // Where source pixel (x, y) goes, as a linear index, and how far one step in x moves.
        let step = m.ay * dw + m.ax;
        for y in 0..h {
            let row = &src[y as usize * stride..y as usize * stride + width];
            let mut at = (m.by * y + cy) * dw + (m.bx * y + cx);
            for &sample in row {
                dst[at as usize] = sample;
                at += step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirroring_first_then_the_rest_is_the_same_orientation() {
        let src: Vec<u8> = (0..12).collect();
        for o in Orientation::every() {
            let (h, v, rest) = o.split_mirror();
            assert!(rest.rotation < 180 && !rest.hflip && !rest.vflip);
            let (mut want, mut mirrored, mut got) = (vec![], vec![], vec![]);
            o.turn_plane(&src, 4, 3, 4, &mut want);
            let mirror = Orientation {
                rotation: 0,
                hflip: h,
                vflip: v,
            };
            mirror.turn_plane(&src, 4, 3, 4, &mut mirrored);
            rest.turn_plane(&mirrored, 4, 3, 4, &mut got);
            assert_eq!(got, want, "{o:?}");
        }
    }

    /// A 3x2 plane: 1 2 3 / 4 5 6.
    const SRC: [u8; 6] = [1, 2, 3, 4, 5, 6];

    fn turned(rotation: u16, hflip: bool, vflip: bool) -> Vec<u8> {
        let mut dst = Vec::new();
        let o = Orientation {
            rotation,
            hflip,
            vflip,
        };
        o.turn_plane(&SRC, 3, 2, 3, &mut dst);
        dst
    }

    #[test]
    fn every_orientation_moves_pixels_where_it_should() {
        assert_eq!(turned(0, false, false), [1, 2, 3, 4, 5, 6]);
        assert_eq!(turned(0, true, false), [3, 2, 1, 6, 5, 4]);
        assert_eq!(turned(0, false, true), [4, 5, 6, 1, 2, 3]);
        assert_eq!(turned(180, false, false), [6, 5, 4, 3, 2, 1]);
        assert_eq!(turned(0, true, true), turned(180, false, false));
        // 90 clockwise: 2 wide, 3 high: 4 1 / 5 2 / 6 3.
        assert_eq!(turned(90, false, false), [4, 1, 5, 2, 6, 3]);
        assert_eq!(turned(270, false, false), [3, 6, 2, 5, 1, 4]);
        // Mirrored, then turned: the transverse, and the transpose (1 4 / 2 5 / 3 6).
        assert_eq!(turned(90, true, false), [6, 3, 5, 2, 4, 1]);
        assert_eq!(turned(270, true, false), [1, 4, 2, 5, 3, 6]);
        assert_eq!(turned(90, true, true), turned(270, false, false));
    }

    #[test]
    fn strides_wider_than_the_picture_are_skipped() {
        let padded = [1, 2, 3, 99, 4, 5, 6, 99];
        let mut dst = Vec::new();
        let o = Orientation {
            rotation: 90,
            ..Default::default()
        };
        o.turn_plane(&padded, 3, 2, 4, &mut dst);
        assert_eq!(dst, [4, 1, 5, 2, 6, 3]);
    }

    #[test]
    fn sizes_swap_for_quarter_turns_and_jpeg_ops_match() {
        let o = |rotation, hflip, vflip| Orientation {
            rotation,
            hflip,
            vflip,
        };
        assert_eq!(o(90, false, false).turned_size((640, 480)), (480, 640));
        assert_eq!(o(180, true, false).turned_size((640, 480)), (640, 480));
        assert!(o(0, false, false).is_identity());
        assert!(o(180, true, true).is_identity());
        assert_eq!(o(0, false, false).jpeg_op(), TransformOp::None);
        assert_eq!(o(0, true, false).jpeg_op(), TransformOp::Hflip);
        assert_eq!(o(0, false, true).jpeg_op(), TransformOp::Vflip);
        assert_eq!(o(0, true, true).jpeg_op(), TransformOp::Rot180);
        assert_eq!(o(90, false, false).jpeg_op(), TransformOp::Rot90);
        assert_eq!(o(270, false, false).jpeg_op(), TransformOp::Rot270);
        assert_eq!(o(90, true, false).jpeg_op(), TransformOp::Transverse);
        assert_eq!(o(90, false, true).jpeg_op(), TransformOp::Transpose);
    }
}
