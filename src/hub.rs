//! Fan-out: every client gets the newest frame and a bounded audio backlog.
//!
//! The hub lives on the single-threaded executor. Capture threads feed it through bounded
//! channels; it never waits on a client. Each client slot holds at most one video frame (a new
//! frame replaces an unsent one, which is counted as skipped) and at most `audio_backlog`
//! audio chunks (the oldest is dropped and counted). A session task drains its slot into its
//! socket at whatever pace the socket allows, so one stalled client slows nobody else, and a
//! client that connects late starts from the newest frame, never from a backlog.
#![forbid(unsafe_code)]

use crate::media::{AudioChunk, VideoFrame, WireFormat};
use crate::stats::Stats;
use async_channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// What a session should write next, oldest first.
#[derive(Debug, Default)]
pub struct Batch {
    /// Audio chunks in capture order.
    pub audio: Vec<Arc<AudioChunk>>,
    /// The newest video frame, if one arrived since the last batch.
    pub video: Option<Arc<VideoFrame>>,
}

#[derive(Default)]
struct Pending {
    video: Option<Arc<VideoFrame>>,
    audio: VecDeque<Arc<AudioChunk>>,
}

/// One connected client's mailbox.
pub struct ClientSlot {
    /// Hub-unique id.
    pub id: u64,
    /// Peer address, for logs and status.
    pub addr: SocketAddr,
    /// Message framing the client asked for.
    pub format: WireFormat,
    /// When the client connected.
    pub connected_at: std::time::Instant,
    pending: RefCell<Pending>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    closed: Cell<bool>,
    /// Frames replaced before they could be sent to this client.
    pub video_skipped: Cell<u64>,
    /// Audio chunks dropped from this client's backlog.
    pub audio_dropped: Cell<u64>,
}

impl ClientSlot {
    fn wake(&self) {
        // A full wake channel already means "look again".
        let _ = self.wake_tx.try_send(());
    }

    /// Waits for the next batch; `None` once the hub is shutting down.
    pub async fn next_batch(&self) -> Option<Batch> {
        loop {
            if self.closed.get() {
                return None;
            }
            {
                let mut p = self.pending.borrow_mut();
                if p.video.is_some() || !p.audio.is_empty() {
                    return Some(Batch {
                        audio: p.audio.drain(..).collect(),
                        video: p.video.take(),
                    });
                }
            }
            if self.wake_rx.recv().await.is_err() {
                return None;
            }
        }
    }
}

/// Registered clients and the newest frame.
pub struct Hub {
    clients: RefCell<BTreeMap<u64, Rc<ClientSlot>>>,
    latest_video: RefCell<Option<Arc<VideoFrame>>>,
    latest_audio_format: Cell<Option<(u32, u16)>>,
    next_id: Cell<u64>,
    audio_backlog: usize,
    stats: Arc<Stats>,
}

/// A registered client; dropping it unregisters the client.
pub struct ClientHandle {
    hub: Rc<Hub>,
    /// The client's slot.
    pub slot: Rc<ClientSlot>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.hub.clients.borrow_mut().remove(&self.slot.id);
    }
}

impl Hub {
    /// A hub keeping at most `audio_backlog` chunks per client.
    pub fn new(audio_backlog: usize, stats: Arc<Stats>) -> Rc<Hub> {
        Rc::new(Hub {
            clients: RefCell::new(BTreeMap::new()),
            latest_video: RefCell::new(None),
            latest_audio_format: Cell::new(None),
            next_id: Cell::new(1),
            audio_backlog: audio_backlog.max(1),
            stats,
        })
    }

    /// Adds a client; it starts with the newest frame, if any.
    pub fn register(self: &Rc<Self>, addr: SocketAddr, format: WireFormat) -> ClientHandle {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        let slot = Rc::new(ClientSlot {
            id,
            addr,
            format,
            connected_at: std::time::Instant::now(),
            pending: RefCell::new(Pending {
                video: self.latest_video.borrow().clone(),
                audio: VecDeque::new(),
            }),
            wake_tx,
            wake_rx,
            closed: Cell::new(false),
            video_skipped: Cell::new(0),
            audio_dropped: Cell::new(0),
        });
        slot.wake();
        self.clients.borrow_mut().insert(id, slot.clone());
        ClientHandle {
            hub: self.clone(),
            slot,
        }
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.borrow().len()
    }

    /// Snapshot of the connected clients.
    pub fn clients(&self) -> Vec<Rc<ClientSlot>> {
        self.clients.borrow().values().cloned().collect()
    }

    /// The newest frame (captured or placeholder).
    pub fn latest_video(&self) -> Option<Arc<VideoFrame>> {
        self.latest_video.borrow().clone()
    }

    /// Rate and channels of the newest audio chunk.
    pub fn audio_format(&self) -> Option<(u32, u16)> {
        self.latest_audio_format.get()
    }

    /// Hands a frame to every client, replacing any frame it has not sent yet.
    pub fn publish_video(&self, frame: Arc<VideoFrame>) {
        for slot in self.clients.borrow().values() {
            let replaced = slot.pending.borrow_mut().video.replace(frame.clone());
            if replaced.is_some() {
                slot.video_skipped.set(slot.video_skipped.get() + 1);
                Stats::add(&self.stats.client_video_skipped, 1);
            }
            slot.wake();
        }
        *self.latest_video.borrow_mut() = Some(frame);
    }

    /// Appends a chunk to every client's backlog, dropping its oldest when full.
    pub fn publish_audio(&self, chunk: Arc<AudioChunk>) {
        self.latest_audio_format
            .set(Some((chunk.sample_rate, chunk.channels)));
        for slot in self.clients.borrow().values() {
            let mut pending = slot.pending.borrow_mut();
            if pending.audio.len() >= self.audio_backlog {
                pending.audio.pop_front();
                slot.audio_dropped.set(slot.audio_dropped.get() + 1);
                Stats::add(&self.stats.client_audio_dropped, 1);
            }
            pending.audio.push_back(chunk.clone());
            drop(pending);
            slot.wake();
        }
    }

    /// Tells every session to close (shutdown).
    pub fn close_all(&self) {
        for slot in self.clients.borrow().values() {
            slot.closed.set(true);
            slot.wake();
        }
    }

    /// Moves frames and chunks from the capture channels to the clients until both close.
    pub async fn run(
        self: Rc<Self>,
        video_rx: Receiver<Arc<VideoFrame>>,
        audio_rx: Receiver<Arc<AudioChunk>>,
    ) {
        let video = async {
            while let Ok(frame) = video_rx.recv().await {
                self.publish_video(frame);
            }
        };
        let audio = async {
            while let Ok(chunk) = audio_rx.recv().await {
                self.publish_audio(chunk);
            }
        };
        futures_lite::future::zip(video, audio).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn frame(ts: f64) -> Arc<VideoFrame> {
        Arc::new(VideoFrame::new(ts, 16, 16, vec![ts as u8], false))
    }

    fn chunk(ts: f64) -> Arc<AudioChunk> {
        Arc::new(AudioChunk::new(ts, 48000, 1, vec![0; 4]))
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn a_slow_client_gets_only_the_newest_frame() {
        let hub = Hub::new(10, Arc::default());
        let client = hub.register(addr(), WireFormat::Text);
        for ts in 1..=5 {
            hub.publish_video(frame(f64::from(ts)));
        }
        let batch = block_on(client.slot.next_batch()).unwrap();
        assert_eq!(batch.video.unwrap().ts, 5.0);
        assert_eq!(client.slot.video_skipped.get(), 4);
    }

    #[test]
    fn a_late_client_starts_from_the_newest_frame() {
        let hub = Hub::new(10, Arc::default());
        hub.publish_video(frame(1.0));
        hub.publish_video(frame(2.0));
        let client = hub.register(addr(), WireFormat::Binary);
        let batch = block_on(client.slot.next_batch()).unwrap();
        assert_eq!(batch.video.unwrap().ts, 2.0);
        assert!(batch.audio.is_empty());
    }

    #[test]
    fn audio_backlog_is_bounded_dropping_the_oldest() {
        let hub = Hub::new(3, Arc::default());
        let client = hub.register(addr(), WireFormat::Text);
        for ts in 1..=5 {
            hub.publish_audio(chunk(f64::from(ts)));
        }
        let batch = block_on(client.slot.next_batch()).unwrap();
        let stamps: Vec<f64> = batch.audio.iter().map(|c| c.ts).collect();
        assert_eq!(stamps, vec![3.0, 4.0, 5.0]);
        assert_eq!(client.slot.audio_dropped.get(), 2);
    }

    #[test]
    fn one_clients_backlog_does_not_touch_anothers() {
        let hub = Hub::new(10, Arc::default());
        let a = hub.register(addr(), WireFormat::Text);
        let b = hub.register(addr(), WireFormat::Text);
        hub.publish_video(frame(1.0));
        assert_eq!(
            block_on(a.slot.next_batch()).unwrap().video.unwrap().ts,
            1.0
        );
        hub.publish_video(frame(2.0));
        hub.publish_video(frame(3.0));
        assert_eq!(a.slot.video_skipped.get(), 1);
        assert_eq!(b.slot.video_skipped.get(), 2);
    }

    #[test]
    fn dropping_the_handle_unregisters_and_close_ends_batches() {
        let hub = Hub::new(10, Arc::default());
        let a = hub.register(addr(), WireFormat::Text);
        {
            let _b = hub.register(addr(), WireFormat::Text);
            assert_eq!(hub.client_count(), 2);
        }
        assert_eq!(hub.client_count(), 1);
        hub.close_all();
        assert!(block_on(a.slot.next_batch()).is_none());
    }
}
