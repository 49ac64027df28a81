//! Fan-out: every client gets the newest frame and fresh audio.
//!
//! The hub lives on the single-threaded executor. Capture threads feed it through bounded
//! channels; it never waits on a client. Each client slot holds at most one video frame (a new
//! frame replaces an unsent one, which is counted as skipped) and at most `audio_backlog`
//! audio chunks (the oldest is dropped and counted). A session task takes one message at a
//! time, when its socket can take it, so one stalled client slows nobody else; audio older
//! than the age bound is dropped (oldest first, counted) as it is taken, so what a slow client
//! hears is never staler than that, and a client that connects late starts from the newest
//! frame, never from a backlog. Multipart MJPEG clients ([`ClientKind::Mjpeg`]) are clients
//! like any other (counted, newest-frame) but are never handed audio.
#![forbid(unsafe_code)]

use crate::media::{AudioChunk, VideoFrame, WireFormat};
use crate::stats::Stats;
use async_channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The next message a session should write.
#[derive(Debug, Clone)]
pub enum Item {
    /// An audio chunk (chunks come out in capture order).
    Audio(Arc<AudioChunk>),
    /// The newest video frame.
    Video(Arc<VideoFrame>),
}

/// Which kind of session drains a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A WebSocket session: video and audio, framed as its [`WireFormat`].
    WebSocket,
    /// A `multipart/x-mixed-replace` HTTP response: JPEG parts only, no audio.
    Mjpeg,
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
    /// Message framing the client asked for (WebSocket clients; unused by MJPEG ones).
    pub format: WireFormat,
    /// What serves the client; MJPEG clients get no audio.
    pub kind: ClientKind,
    /// When the client connected.
    pub connected_at: std::time::Instant,
    pending: RefCell<Pending>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    closed: Cell<bool>,
    max_audio_age: f64,
    /// Since when the client has had to lose audio for age without catching up since.
    behind_since: Cell<Option<Instant>>,
    stats: Arc<Stats>,
    /// Frames replaced before they could be sent to this client.
    pub video_skipped: Cell<u64>,
    /// Audio chunks dropped from this client's backlog (full, or older than the age bound).
    pub audio_dropped: Cell<u64>,
}

impl ClientSlot {
    /// How the client receives the stream, as `/status` names it: the WebSocket wire format
    /// or `mjpeg`.
    pub fn format_name(&self) -> &'static str {
        match self.kind {
            ClientKind::WebSocket => self.format.as_str(),
            ClientKind::Mjpeg => "mjpeg",
        }
    }

    fn wake(&self) {
        // A full wake channel already means "look again".
        let _ = self.wake_tx.try_send(());
    }

    /// Waits until there is something to take; false once the hub is shutting down.
    pub async fn ready(&self) -> bool {
        loop {
            if self.closed.get() {
                return false;
            }
            {
                let p = self.pending.borrow();
                if p.video.is_some() || !p.audio.is_empty() {
                    return true;
                }
            }
            if self.wake_rx.recv().await.is_err() {
                return false;
            }
        }
    }

    /// The next message to write at UNIX time `now`: audio chunks older than the age bound
    /// are dropped first (counted), then the earlier (by capture time) of the oldest chunk
    /// and the newest frame is taken.
    pub fn take(&self, now: f64) -> Option<Item> {
        if self.closed.get() {
            return None;
        }
        let mut p = self.pending.borrow_mut();
        let mut stale = 0;
        while p
            .audio
            .front()
            .is_some_and(|a| now - a.ts > self.max_audio_age)
        {
            p.audio.pop_front();
            stale += 1;
        }
        if stale > 0 {
            self.audio_dropped.set(self.audio_dropped.get() + stale);
            Stats::add(&self.stats.client_audio_stale, stale);
            if self.behind_since.get().is_none() {
                self.behind_since.set(Some(Instant::now()));
            }
        }
        let video_first = match (p.audio.front(), &p.video) {
            (Some(a), Some(v)) => v.ts < a.ts,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let item = if video_first {
            p.video.take().map(Item::Video)
        } else {
            p.audio.pop_front().map(Item::Audio)
        };
        // Everything sent: whatever lag there was has been made up.
        if p.audio.is_empty() {
            self.behind_since.set(None);
        }
        item
    }

    /// How long the client has been losing audio to the age bound without catching up.
    pub fn behind_for(&self) -> Duration {
        self.behind_since
            .get()
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Registered clients and the newest frame.
pub struct Hub {
    clients: RefCell<BTreeMap<u64, Rc<ClientSlot>>>,
    latest_video: RefCell<Option<Arc<VideoFrame>>>,
    latest_audio_format: Cell<Option<(u32, u16)>>,
    next_id: Cell<u64>,
    audio_backlog: usize,
    max_audio_age: Duration,
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
    /// A hub keeping at most `audio_backlog` chunks per client, none older than
    /// `max_audio_age` when it is sent.
    pub fn new(audio_backlog: usize, max_audio_age: Duration, stats: Arc<Stats>) -> Rc<Hub> {
        Rc::new(Hub {
            clients: RefCell::new(BTreeMap::new()),
            latest_video: RefCell::new(None),
            latest_audio_format: Cell::new(None),
            next_id: Cell::new(1),
            audio_backlog: audio_backlog.max(1),
            max_audio_age,
            stats,
        })
    }

    /// Adds a WebSocket client; it starts with the newest frame, if any.
    pub fn register(self: &Rc<Self>, addr: SocketAddr, format: WireFormat) -> ClientHandle {
        self.register_kind(addr, format, ClientKind::WebSocket)
    }

    /// Adds a multipart MJPEG client: video only, starting with the newest frame, if any.
    pub fn register_mjpeg(self: &Rc<Self>, addr: SocketAddr) -> ClientHandle {
        self.register_kind(addr, WireFormat::Binary, ClientKind::Mjpeg)
    }

    fn register_kind(
        self: &Rc<Self>,
        addr: SocketAddr,
        format: WireFormat,
        kind: ClientKind,
    ) -> ClientHandle {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        let slot = Rc::new(ClientSlot {
            id,
            addr,
            format,
            kind,
            connected_at: std::time::Instant::now(),
            pending: RefCell::new(Pending {
                video: self.latest_video.borrow().clone(),
                audio: VecDeque::new(),
            }),
            wake_tx,
            wake_rx,
            closed: Cell::new(false),
            max_audio_age: self.max_audio_age.as_secs_f64(),
            behind_since: Cell::new(None),
            stats: self.stats.clone(),
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
            if slot.kind == ClientKind::Mjpeg {
                continue;
            }
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

    const NOW: f64 = 100.0;

    fn frame(ts: f64) -> Arc<VideoFrame> {
        Arc::new(VideoFrame::new(ts, 16, 16, vec![ts as u8], false))
    }

    fn chunk(ts: f64) -> Arc<AudioChunk> {
        Arc::new(AudioChunk::new(ts, 48000, 1, vec![0; 4]))
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn hub(backlog: usize) -> Rc<Hub> {
        Hub::new(backlog, Duration::from_secs(1), Arc::default())
    }

    /// Takes everything there is, as (kind, ts) pairs.
    fn drain(slot: &ClientSlot, now: f64) -> Vec<(&'static str, f64)> {
        std::iter::from_fn(|| slot.take(now))
            .map(|item| match item {
                Item::Audio(a) => ("audio", a.ts),
                Item::Video(v) => ("video", v.ts),
            })
            .collect()
    }

    #[test]
    fn a_slow_client_gets_only_the_newest_frame() {
        let hub = hub(10);
        let client = hub.register(addr(), WireFormat::Text);
        for ts in 1..=5 {
            hub.publish_video(frame(NOW - 1.0 + f64::from(ts) / 10.0));
        }
        assert_eq!(drain(&client.slot, NOW), vec![("video", NOW - 0.5)]);
        assert_eq!(client.slot.video_skipped.get(), 4);
    }

    #[test]
    fn a_late_client_starts_from_the_newest_frame() {
        let hub = hub(10);
        hub.publish_video(frame(NOW - 0.2));
        hub.publish_video(frame(NOW - 0.1));
        let client = hub.register(addr(), WireFormat::Binary);
        assert_eq!(drain(&client.slot, NOW), vec![("video", NOW - 0.1)]);
    }

    #[test]
    fn audio_backlog_is_bounded_dropping_the_oldest() {
        let hub = hub(3);
        let client = hub.register(addr(), WireFormat::Text);
        for ts in 1..=5 {
            hub.publish_audio(chunk(NOW - 1.0 + f64::from(ts) / 10.0));
        }
        let stamps: Vec<f64> = drain(&client.slot, NOW).iter().map(|i| i.1).collect();
        assert_eq!(stamps, vec![NOW - 0.7, NOW - 0.6, NOW - 0.5]);
        assert_eq!(client.slot.audio_dropped.get(), 2);
    }

    #[test]
    fn audio_older_than_the_bound_is_dropped_and_never_sent() {
        let hub = hub(100);
        let client = hub.register(addr(), WireFormat::Text);
        for i in 0..50 {
            hub.publish_audio(chunk(NOW - 2.0 + f64::from(i) * 0.04));
        }
        let sent = drain(&client.slot, NOW);
        assert!(sent.iter().all(|(_, ts)| NOW - ts <= 1.0), "{sent:?}");
        assert_eq!(sent.len(), 25);
        assert_eq!(client.slot.audio_dropped.get(), 25);
        assert_eq!(Stats::get(&hub.stats.client_audio_stale), 25);
    }

    #[test]
    fn messages_come_out_in_capture_order() {
        let hub = hub(10);
        let client = hub.register(addr(), WireFormat::Text);
        hub.publish_audio(chunk(NOW - 0.30));
        hub.publish_video(frame(NOW - 0.25));
        hub.publish_audio(chunk(NOW - 0.20));
        assert_eq!(
            drain(&client.slot, NOW),
            vec![
                ("audio", NOW - 0.30),
                ("video", NOW - 0.25),
                ("audio", NOW - 0.20)
            ]
        );
    }

    #[test]
    fn a_client_is_behind_until_it_has_sent_everything() {
        let hub = hub(100);
        let client = hub.register(addr(), WireFormat::Text);
        hub.publish_audio(chunk(NOW - 3.0));
        hub.publish_audio(chunk(NOW - 0.1));
        hub.publish_audio(chunk(NOW - 0.05));
        assert!(client.slot.take(NOW).is_some());
        assert!(
            client.slot.behind_since.get().is_some(),
            "lost a chunk to age"
        );
        assert!(client.slot.take(NOW).is_some());
        assert!(client.slot.behind_since.get().is_none(), "caught up");
    }

    #[test]
    fn an_mjpeg_client_gets_the_newest_frame_and_no_audio() {
        let hub = hub(10);
        let mjpeg = hub.register_mjpeg(addr());
        let ws = hub.register(addr(), WireFormat::Text);
        hub.publish_audio(chunk(NOW - 0.30));
        hub.publish_video(frame(NOW - 0.25));
        hub.publish_video(frame(NOW - 0.20));
        hub.publish_audio(chunk(NOW - 0.10));
        assert_eq!(drain(&mjpeg.slot, NOW), vec![("video", NOW - 0.20)]);
        assert_eq!(mjpeg.slot.audio_dropped.get(), 0, "no audio to drop");
        assert_eq!(drain(&ws.slot, NOW).len(), 3);
        assert_eq!(hub.client_count(), 2);
        assert_eq!(mjpeg.slot.format_name(), "mjpeg");
        assert_eq!(ws.slot.format_name(), "text");
    }

    #[test]
    fn one_clients_backlog_does_not_touch_anothers() {
        let hub = hub(10);
        let a = hub.register(addr(), WireFormat::Text);
        let b = hub.register(addr(), WireFormat::Text);
        hub.publish_video(frame(NOW - 0.3));
        assert_eq!(drain(&a.slot, NOW), vec![("video", NOW - 0.3)]);
        hub.publish_video(frame(NOW - 0.2));
        hub.publish_video(frame(NOW - 0.1));
        assert_eq!(a.slot.video_skipped.get(), 1);
        assert_eq!(b.slot.video_skipped.get(), 2);
    }

    #[test]
    fn dropping_the_handle_unregisters_and_close_ends_the_slot() {
        let hub = hub(10);
        let a = hub.register(addr(), WireFormat::Text);
        {
            let _b = hub.register(addr(), WireFormat::Text);
            assert_eq!(hub.client_count(), 2);
        }
        assert_eq!(hub.client_count(), 1);
        hub.publish_video(frame(NOW));
        hub.close_all();
        assert!(!futures_lite::future::block_on(a.slot.ready()));
        assert!(a.slot.take(NOW).is_none());
    }
}
