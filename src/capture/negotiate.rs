//! Choosing a camera format from what the driver offers (pure; the V4L2 backend feeds it).
//!
//! Rules, in order: the size nearest the requested capture size (exact first; otherwise the
//! smallest size that is at least as large, so we scale down rather than up; otherwise the
//! largest); then a rate that reaches the requested fps; then the cheapest format to turn
//! into a JPEG: MJPEG (passed through when no scaling is needed), then I420, NV12, YUYV.
#![forbid(unsafe_code)]

/// A pixel format the backend can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PixelFormat {
    /// Motion JPEG ("MJPG"; also "JPEG" on some drivers).
    Mjpeg,
    /// Planar YUV 4:2:0 ("YU12").
    I420,
    /// Semi-planar YUV 4:2:0 ("NV12").
    Nv12,
    /// Packed YUV 4:2:2 ("YUYV").
    Yuyv,
}

impl PixelFormat {
    /// The format for a V4L2 fourcc, if we can use it.
    pub fn from_fourcc(fourcc: &[u8; 4]) -> Option<PixelFormat> {
        match fourcc {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YU12" => Some(PixelFormat::I420),
            b"NV12" => Some(PixelFormat::Nv12),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    /// The V4L2 fourcc to request.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::I420 => *b"YU12",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
}

/// Frame sizes a driver offers for one format.
#[derive(Clone, Debug, PartialEq)]
pub enum Sizes {
    /// A list of sizes, each with its frame rates (fps; empty = unknown).
    Discrete(Vec<(u32, u32, Vec<f64>)>),
    /// Any size in a range on a step grid (rates not enumerated).
    Stepwise {
        /// Smallest (width, height).
        min: (u32, u32),
        /// Largest (width, height).
        max: (u32, u32),
        /// Step (width, height); 1 for continuous.
        step: (u32, u32),
    },
}

/// One format as the driver describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// The format.
    pub format: PixelFormat,
    /// Its sizes.
    pub sizes: Sizes,
}

/// What was chosen, and what to tell the user about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Format to set.
    pub format: PixelFormat,
    /// Size to set.
    pub width: u32,
    /// Size to set.
    pub height: u32,
    /// Frame rate to ask for (the nearest the size offers, or the request if unknown).
    pub fps: f64,
    /// Why this differs from the request, for the log (empty when it matches).
    pub notes: Vec<String>,
}

/// Picks format, size and rate for a request of `want` (width, height) at `fps`.
pub fn choose(offers: &[Offer], want: (u32, u32), fps: u32) -> Option<Choice> {
    let fps = f64::from(fps);
    let mut candidates = Vec::new();
    for offer in offers {
        match &offer.sizes {
            Sizes::Discrete(list) => {
                for (w, h, rates) in list {
                    candidates.push((offer.format, *w, *h, rates.clone()));
                }
            }
            Sizes::Stepwise { min, max, step } => {
                let fit = |v: u32, lo: u32, hi: u32, st: u32| {
                    let v = v.clamp(lo, hi);
                    let st = st.max(1);
                    (lo + (v - lo).div_ceil(st) * st).min(hi)
                };
                let w = fit(want.0, min.0, max.0, step.0);
                let h = fit(want.1, min.1, max.1, step.1);
                candidates.push((offer.format, w, h, Vec::new()));
            }
        }
    }
    let size_rank = |w: u32, h: u32| -> (u8, u64) {
        let (area, want_area) = (
            u64::from(w) * u64::from(h),
            u64::from(want.0) * u64::from(want.1),
        );
        if (w, h) == want {
            (0, 0)
        } else if w >= want.0 && h >= want.1 {
            (1, area - want_area)
        } else {
            // Too small: prefer the largest.
            (2, u64::MAX - area)
        }
    };
    // A rate at or above the request costs nothing; below it, rank by the shortfall.
    let best_rate = |rates: &[f64]| -> f64 {
        if rates.is_empty() {
            return fps;
        }
        rates
            .iter()
            .copied()
            .filter(|r| *r >= fps - 0.01)
            .min_by(|a, b| a.total_cmp(b))
            .or_else(|| rates.iter().copied().max_by(|a, b| a.total_cmp(b)))
            .unwrap_or(fps)
    };
    let (format, width, height, rates) = candidates.into_iter().min_by(|a, b| {
        let key = |c: &(PixelFormat, u32, u32, Vec<f64>)| {
            let shortfall = (fps - best_rate(&c.3)).max(0.0);
            (size_rank(c.1, c.2), (shortfall * 1000.0) as u64, c.0)
        };
        key(a).cmp(&key(b))
    })?;
    let rate = best_rate(&rates);
    let mut notes = Vec::new();
    if (width, height) != want {
        notes.push(format!(
            "the camera has no {}x{}; using the nearest size it offers, {width}x{height}",
            want.0, want.1
        ));
    }
    if rate + 0.01 < fps {
        notes.push(format!(
            "at {width}x{height} the camera reaches only {rate:.1} fps"
        ));
    }
    Some(Choice {
        format,
        width,
        height,
        fps: rate,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: &[f64] = &[30.0, 25.0, 20.0, 15.0, 10.0, 5.0];

    fn discrete(format: PixelFormat, sizes: &[(u32, u32, &[f64])]) -> Offer {
        Offer {
            format,
            sizes: Sizes::Discrete(sizes.iter().map(|(w, h, r)| (*w, *h, r.to_vec())).collect()),
        }
    }

    /// Roughly a Logitech C920 over USB 2: raw YUYV is slow at large sizes, MJPEG is not.
    fn c920() -> Vec<Offer> {
        vec![
            discrete(
                PixelFormat::Yuyv,
                &[
                    (640, 480, RATES),
                    (800, 600, &[24.0, 20.0, 15.0, 10.0, 5.0]),
                    (1280, 720, &[10.0, 5.0]),
                    (1920, 1080, &[5.0]),
                ],
            ),
            discrete(
                PixelFormat::Mjpeg,
                &[
                    (640, 480, RATES),
                    (800, 600, RATES),
                    (1280, 720, RATES),
                    (1920, 1080, RATES),
                ],
            ),
        ]
    }

    /// vivid's webcam input: YUYV and friends, no MJPEG.
    fn vivid() -> Vec<Offer> {
        let sizes: &[(u32, u32, &[f64])] = &[
            (320, 180, &[25.0, 15.0, 5.0]),
            (640, 360, &[25.0, 15.0, 5.0]),
            (640, 480, &[25.0, 15.0, 5.0]),
            (1280, 720, &[25.0, 15.0, 5.0]),
        ];
        vec![
            discrete(PixelFormat::Yuyv, sizes),
            discrete(PixelFormat::Nv12, sizes),
            discrete(PixelFormat::I420, sizes),
        ]
    }

    #[test]
    fn mjpeg_is_preferred_when_offered_at_the_size() {
        let c = choose(&c920(), (1280, 720), 30).unwrap();
        assert_eq!(
            (c.format, c.width, c.height, c.fps),
            (PixelFormat::Mjpeg, 1280, 720, 30.0)
        );
        assert!(c.notes.is_empty());
        let c = choose(&c920(), (640, 480), 15).unwrap();
        assert_eq!((c.format, c.fps), (PixelFormat::Mjpeg, 15.0));
    }

    #[test]
    fn raw_formats_prefer_the_cheapest_to_encode() {
        let c = choose(&vivid(), (640, 480), 15).unwrap();
        assert_eq!((c.format, c.width, c.height), (PixelFormat::I420, 640, 480));
        let yuyv_only = vec![vivid().remove(0)];
        let c = choose(&yuyv_only, (640, 480), 15).unwrap();
        assert_eq!(c.format, PixelFormat::Yuyv);
    }

    #[test]
    fn a_missing_size_picks_the_nearest_larger_and_says_so() {
        let c = choose(&c920(), (1024, 576), 15).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
        assert!(c.notes[0].contains("no 1024x576"), "{:?}", c.notes);
        // Larger than anything offered: the largest.
        let c = choose(&c920(), (3840, 2160), 5).unwrap();
        assert_eq!(
            (c.format, c.width, c.height),
            (PixelFormat::Mjpeg, 1920, 1080)
        );
    }

    #[test]
    fn the_rate_is_the_slowest_that_reaches_the_request_or_the_fastest_below() {
        let c = choose(&c920(), (640, 480), 12).unwrap();
        assert_eq!(c.fps, 15.0);
        let yuyv_only = vec![c920().remove(0)];
        let c = choose(&yuyv_only, (1280, 720), 30).unwrap();
        assert_eq!(c.fps, 10.0);
        assert!(
            c.notes.iter().any(|n| n.contains("only 10.0 fps")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn stepwise_sizes_are_fitted_to_the_grid() {
        let offers = [Offer {
            format: PixelFormat::Yuyv,
            sizes: Sizes::Stepwise {
                min: (48, 32),
                max: (1920, 1080),
                step: (16, 8),
            },
        }];
        let c = choose(&offers, (1000, 563), 15).unwrap();
        assert_eq!((c.width, c.height), (1008, 568));
        let c = choose(&offers, (640, 480), 15).unwrap();
        assert_eq!((c.width, c.height, c.fps), (640, 480, 15.0));
        assert!(c.notes.is_empty());
    }

    #[test]
    fn nothing_usable_is_none() {
        assert_eq!(choose(&[], (640, 480), 15), None);
    }

    #[test]
    fn fourccs_round_trip() {
        for f in [
            PixelFormat::Mjpeg,
            PixelFormat::I420,
            PixelFormat::Nv12,
            PixelFormat::Yuyv,
        ] {
            assert_eq!(PixelFormat::from_fourcc(&f.fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_fourcc(b"JPEG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_fourcc(b"RGB3"), None);
    }
}
