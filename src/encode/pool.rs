//! Frame-parallel JPEG encoding (`--encoder-threads N`): N threads, each with its own
//! shaper and encoder, take whole frames from the capture thread.
//!
//! One core of a Pi 4 encodes 1080p at 10-15 fps; four cores, each on its own frame, keep
//! up with a 30 fps camera. The rules are the ones the rest of the pipeline keeps:
//! - **Newest frame first.** One frame waits for a free thread at most; a newer one
//!   replaces it (counted in `video_encoder_dropped`).
//! - **Output in capture order.** A frame that finishes after a newer one was published is
//!   dropped (counted the same way), never sent out of order, and nothing waits for it.
//!
//! What it adds to a frame's latency is the copy out of the camera's buffer and, when every
//! thread is busy, the wait for one (less than one encode); `scripts/bench` measures it.
#![forbid(unsafe_code)]

use super::jpeg::Encoder;
use super::orient::Orientation;
use super::scale::{FrameShaper, ShapeError};
use crate::capture::OwnedPicture;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A frame for the pool: a copy of the camera's picture and what the JPEG needs.
pub struct Job {
    /// The picture, owned (its buffer goes back to the pool's spares once encoded).
    pub picture: OwnedPicture,
    /// Capture timestamp, UNIX seconds (the wire's `<ts>`).
    pub ts: f64,
    /// Size to encode at (before the turn).
    pub out: (u32, u32),
    /// The turn the pipeline does (what the camera did not).
    pub orientation: Orientation,
}

/// Where the pool's threads deliver, in capture order.
pub trait JpegSink: Send + Sync + 'static {
    /// A frame encoded in `took`: `jpeg` sits behind the binary header's reserved room.
    fn encoded(&self, ts: f64, jpeg: Vec<u8>, took: Duration);
    /// The encoder refused a frame.
    fn failed(&self, error: ShapeError);
    /// A frame was dropped because the threads were behind (replaced or finished late).
    fn dropped(&self);
}

/// The running threads; dropping the pool stops and joins them.
pub struct EncoderPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    sink: Arc<dyn JpegSink>,
}

#[derive(Default)]
struct State {
    /// The newest frame waiting for a thread, with its sequence number.
    waiting: Option<(u64, Job)>,
    /// Sequence number the next submitted frame gets.
    next_seq: u64,
    /// Sequence number of the newest frame published (0: none yet).
    published: u64,
    /// Picture buffers to reuse.
    spares: Vec<OwnedPicture>,
    stop: bool,
}

impl State {
    /// Numbers `job` and makes it the one waiting; returns the frame it replaced.
    fn offer(&mut self, job: Job) -> Option<Job> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.replace((seq, job)).map(|(_, j)| j)
    }

    /// Frame `seq` is encoded: true if it is to be published (nothing newer went out).
    fn finish(&mut self, seq: u64) -> bool {
        let newer = seq > self.published;
        if newer {
            self.published = seq;
        }
        newer
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EncoderPool {
    /// Starts `threads` encoder threads at `quality`, each reserving `reserve` bytes ahead
    /// of its JPEGs (the binary header's room).
    pub fn start(
        threads: usize,
        quality: u8,
        reserve: usize,
        sink: Arc<dyn JpegSink>,
    ) -> std::io::Result<EncoderPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
            work: Condvar::new(),
            sink,
        });
        let mut pool = EncoderPool {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for n in 0..threads.max(1) {
            let encoder = Encoder::new(quality)
                .map_err(|e| std::io::Error::other(format!("JPEG encoder: {e}")))?
                .reserving(reserve);
            let shared = shared.clone();
            pool.threads.push(
                std::thread::Builder::new()
                    .name(format!("jpeg-encode-{n}"))
                    .spawn(move || work(&shared, encoder))?,
            );
        }
        Ok(pool)
    }

    /// A picture buffer to copy the next frame into (a spare one when there is one).
    pub fn buffer(&self) -> OwnedPicture {
        self.shared.lock().spares.pop().unwrap_or_default()
    }

    /// Hands a frame to the next free thread. A frame still waiting for one is replaced
    /// (and counted as dropped): the newest frame is the one worth encoding.
    pub fn submit(&self, job: Job) {
        let mut state = self.shared.lock();
        if let Some(replaced) = state.offer(job) {
            state.spares.push(replaced.picture);
            self.shared.sink.dropped();
        }
        drop(state);
        self.shared.work.notify_one();
    }
}

impl Drop for EncoderPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a JPEG encoder thread panicked");
            }
        }
    }
}

/// One encoder thread: takes the waiting frame, encodes it, publishes it unless a newer one
/// already went out.
fn work(shared: &Shared, mut encoder: Encoder) {
    let mut shaper = FrameShaper::new();
    loop {
        let (seq, job) = {
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(taken) = state.waiting.take() {
                    break taken;
                }
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        shaper.set_orientation(job.orientation);
        let started = Instant::now();
        let shaped = shaper.shape(&mut encoder, &job.picture.picture(), job.out);
        let took = started.elapsed();
        let mut state = shared.lock();
        state.spares.push(job.picture);
        match shaped {
            // Published under the lock: two threads finishing together keep their order.
            Ok((jpeg, _path)) if state.finish(seq) => shared.sink.encoded(job.ts, jpeg, took),
            Ok(_) => shared.sink.dropped(),
            Err(e) => shared.sink.failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::test::TestPattern;
    use crate::capture::{VideoParams, VideoSource};

    /// Collects what the pool delivers.
    #[derive(Default)]
    struct Collect {
        frames: Mutex<Vec<(f64, Vec<u8>)>>,
        dropped: Mutex<u32>,
    }

    impl JpegSink for Collect {
        fn encoded(&self, ts: f64, jpeg: Vec<u8>, _took: Duration) {
            self.frames.lock().unwrap().push((ts, jpeg));
        }
        fn failed(&self, error: ShapeError) {
            panic!("encode failed: {error}");
        }
        fn dropped(&self) {
            *self.dropped.lock().unwrap() += 1;
        }
    }

    /// The source's next frame as a job, in `picture` (a pool's spare or a new buffer).
    fn pattern_job(source: &mut TestPattern, mut picture: OwnedPicture, ts: f64) -> Job {
        let frame = source.next_frame().unwrap().unwrap();
        picture.copy_from(&frame.picture);
        Job {
            picture,
            ts,
            out: frame.picture.size(),
            orientation: Orientation::default(),
        }
    }

    #[test]
    fn frames_come_out_in_capture_order_as_jpegs_or_are_counted_dropped() {
        let sink = Arc::new(Collect::default());
        let pool = EncoderPool::start(3, 70, 16, sink.clone()).unwrap();
        let mut source = TestPattern::unpaced(&VideoParams::at(320, 240, 30)).unwrap();
        for n in 0..60 {
            let job = pattern_job(&mut source, pool.buffer(), f64::from(n));
            pool.submit(job);
            if n % 4 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Dropping the pool joins the threads once they are done.
        std::thread::sleep(Duration::from_millis(200));
        drop(pool);
        let frames = sink.frames.lock().unwrap();
        let dropped = *sink.dropped.lock().unwrap();
        assert!(!frames.is_empty());
        assert!(
            frames.windows(2).all(|w| w[0].0 < w[1].0),
            "in capture order"
        );
        assert_eq!(
            frames.len() as u32 + dropped,
            60,
            "each frame sent or counted"
        );
        for (_, jpeg) in frames.iter() {
            assert_eq!(
                &jpeg[16..18],
                &[0xFF, 0xD8],
                "a JPEG behind 16 reserved bytes"
            );
        }
    }

    #[test]
    fn a_frame_waiting_for_a_thread_is_replaced_and_a_late_one_is_not_published() {
        let mut source = TestPattern::unpaced(&VideoParams::at(64, 48, 30)).unwrap();
        let mut job = |ts: f64| pattern_job(&mut source, OwnedPicture::default(), ts);
        let mut state = State {
            next_seq: 1,
            ..State::default()
        };
        assert!(state.offer(job(1.0)).is_none());
        let replaced = state.offer(job(2.0)).expect("the first is replaced");
        assert_eq!(replaced.ts, 1.0);
        let (second, _) = state.waiting.take().expect("the second waits");
        assert!(state.offer(job(3.0)).is_none(), "nothing waits: taken");
        let (third, _) = state.waiting.take().expect("the third waits");
        assert!(state.finish(third), "the newest finishes first: published");
        assert!(!state.finish(second), "the older one, later: dropped");
    }
}
