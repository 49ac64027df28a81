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
//!
//! H.264 clients cannot skip to "the newest frame": a P-frame needs every one before it back
//! to a keyframe. Their slot is a short queue instead ([`H264_BACKLOG`] units). A client that
//! joins starts at a keyframe: the current group of pictures is replayed when it is short
//! (at most [`KEY_GAP_FRAMES`] units, the span in which the encoder would not force another
//! keyframe anyway), else a keyframe is requested and arrives with the next frame. A client
//! whose queue overflows, or that missed a unit, drops everything it has and waits for the
//! next keyframe, which it requests once it is able to take data again (a stalled client
//! asks for nothing). So a client never gets a backlog or a unit it cannot decode, and its
//! memory stays bounded.
#![forbid(unsafe_code)]

use crate::encode::demand::{Codec, Demand};
use crate::stats::Stats;
use crate::stream::media::{AudioChunk, H264Unit, VideoFrame, WireFormat};
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
    /// The next H.264 access unit.
    H264(Arc<H264Unit>),
}

impl Item {
    /// UNIX capture time of what it carries.
    pub fn ts(&self) -> f64 {
        match self {
            Item::Audio(a) => a.ts,
            Item::Video(v) => v.ts,
            Item::H264(u) => u.ts,
        }
    }
}

/// Most H.264 units a client may have waiting; one more and it restarts at a keyframe.
pub const H264_BACKLOG: usize = 16;
pub use crate::encode::h264_stage::KEY_GAP_FRAMES;

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
    h264: VecDeque<Arc<H264Unit>>,
    /// Waiting for a keyframe: units until then are skipped.
    need_key: bool,
    /// That wait's keyframe request was made.
    key_requested: bool,
}

impl Pending {
    fn has_data(&self) -> bool {
        self.video.is_some() || !self.audio.is_empty() || !self.h264.is_empty()
    }
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
    /// The video codec it is sent.
    pub codec: Codec,
    /// When the client connected.
    pub connected_at: std::time::Instant,
    pending: RefCell<Pending>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    demand: Arc<Demand>,
    closed: Cell<bool>,
    max_audio_age: f64,
    /// Since when the client has had to lose audio for age without catching up since.
    behind_since: Cell<Option<Instant>>,
    stats: Arc<Stats>,
    /// Frames replaced before they could be sent to this client, or H.264 units it dropped
    /// while it waited for a keyframe.
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

    fn skipped(&self, n: u64) {
        if n > 0 {
            self.video_skipped.set(self.video_skipped.get() + n);
            Stats::add(&self.stats.codec(self.codec).client_skipped, n);
            if self.codec == Codec::Jpeg {
                Stats::add(&self.stats.client_video_skipped, n);
            }
        }
    }

    /// Drops what the client has queued and waits for the next keyframe.
    fn restart_at_keyframe(&self, p: &mut Pending) {
        let dropped = p.h264.len() as u64;
        p.h264.clear();
        p.need_key = true;
        p.key_requested = false;
        self.skipped(dropped);
    }

    /// The client asks to start again at a keyframe (its decoder failed or it fell behind):
    /// what it has queued is dropped and a keyframe requested once it can take one. A client
    /// already waiting for one, or not an H.264 client, changes nothing.
    pub fn resync(&self) {
        if self.codec != Codec::H264 {
            return;
        }
        let mut p = self.pending.borrow_mut();
        if p.need_key {
            return;
        }
        self.restart_at_keyframe(&mut p);
        drop(p);
        self.wake();
    }

    /// Queues an H.264 unit, or skips it (see the module's rules).
    fn offer_h264(&self, unit: &Arc<H264Unit>) {
        let mut p = self.pending.borrow_mut();
        if unit.keyframe {
            // Whatever is still queued is older than a picture the client can start from.
            let stale = p.h264.len() as u64;
            p.h264.clear();
            self.skipped(stale);
            p.need_key = false;
        } else if p.need_key {
            self.skipped(1);
            return;
        } else if p.h264.len() >= H264_BACKLOG {
            self.restart_at_keyframe(&mut p);
            self.skipped(1);
            return;
        }
        p.h264.push_back(unit.clone());
        drop(p);
        self.wake();
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
                if p.has_data() || (p.need_key && !p.key_requested) {
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
        if p.need_key && !p.key_requested && p.h264.is_empty() {
            // Able to take data again: now the keyframe is worth asking for.
            p.key_requested = true;
            self.demand.request_keyframe();
        }
        let video_ts = match self.codec {
            Codec::Jpeg => p.video.as_ref().map(|v| v.ts),
            Codec::H264 => p.h264.front().map(|u| u.ts),
        };
        let video_first = match (p.audio.front(), video_ts) {
            (Some(a), Some(v)) => v < a.ts,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let item = if !video_first {
            p.audio.pop_front().map(Item::Audio)
        } else if self.codec == Codec::H264 {
            p.h264.pop_front().map(Item::H264)
        } else {
            p.video.take().map(Item::Video)
        };
        // Everything sent: whatever lag there was has been made up.
        if p.audio.is_empty() {
            self.behind_since.set(None);
        }
        item
    }

    /// Returns an item just taken that the socket could not start to take, so that the
    /// next [`take`](Self::take), after the socket drains, picks what is newest then: a newer
    /// frame replaces it, a chunk or unit goes back in front of its queue.
    pub fn put_back(&self, item: Item) {
        let mut p = self.pending.borrow_mut();
        match item {
            Item::Video(v) => {
                if p.video.is_none() {
                    p.video = Some(v);
                }
            }
            Item::Audio(a) => p.audio.push_front(a),
            Item::H264(u) => p.h264.push_front(u),
        }
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
    /// The H.264 units since (and with) the newest keyframe, for joining clients; emptied
    /// when longer than [`KEY_GAP_FRAMES`].
    gop: RefCell<Vec<Arc<H264Unit>>>,
    /// Requests waiting for the next JPEG (snapshots).
    video_waiters: RefCell<Vec<Sender<Arc<VideoFrame>>>>,
    /// `seq` the next H.264 unit should have.
    next_seq: Cell<Option<u64>>,
    demand: Arc<Demand>,
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
        self.hub.demand.remove(self.slot.codec);
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
            gop: RefCell::new(Vec::new()),
            video_waiters: RefCell::new(Vec::new()),
            next_seq: Cell::new(None),
            demand: Arc::new(Demand::default()),
            next_id: Cell::new(1),
            audio_backlog: audio_backlog.max(1),
            max_audio_age,
            stats,
        })
    }

    /// What the encoder stages read to know which codecs anyone watches.
    pub fn demand(&self) -> Arc<Demand> {
        self.demand.clone()
    }

    /// Adds a WebSocket client of JPEG video; it starts with the newest frame, if any.
    pub fn register(self: &Rc<Self>, addr: SocketAddr, format: WireFormat) -> ClientHandle {
        self.register_kind(addr, format, ClientKind::WebSocket, Codec::Jpeg)
    }

    /// Adds a WebSocket client of `codec` video.
    pub fn register_codec(
        self: &Rc<Self>,
        addr: SocketAddr,
        format: WireFormat,
        codec: Codec,
    ) -> ClientHandle {
        self.register_kind(addr, format, ClientKind::WebSocket, codec)
    }

    /// Adds a multipart MJPEG client: video only, starting with the newest frame, if any.
    pub fn register_mjpeg(self: &Rc<Self>, addr: SocketAddr) -> ClientHandle {
        self.register_kind(addr, WireFormat::Binary, ClientKind::Mjpeg, Codec::Jpeg)
    }

    fn register_kind(
        self: &Rc<Self>,
        addr: SocketAddr,
        format: WireFormat,
        kind: ClientKind,
        codec: Codec,
    ) -> ClientHandle {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        let slot = Rc::new(ClientSlot {
            id,
            addr,
            format,
            kind,
            codec,
            connected_at: std::time::Instant::now(),
            pending: RefCell::new(self.first_pending(codec)),
            wake_tx,
            wake_rx,
            demand: self.demand.clone(),
            closed: Cell::new(false),
            max_audio_age: self.max_audio_age.as_secs_f64(),
            behind_since: Cell::new(None),
            stats: self.stats.clone(),
            video_skipped: Cell::new(0),
            audio_dropped: Cell::new(0),
        });
        slot.wake();
        self.demand.add(codec);
        self.clients.borrow_mut().insert(id, slot.clone());
        ClientHandle {
            hub: self.clone(),
            slot,
        }
    }

    /// What a new client of `codec` starts with: the newest JPEG if JPEG is being encoded;
    /// or the current group of pictures when it is short, else nothing and a keyframe
    /// request.
    fn first_pending(&self, codec: Codec) -> Pending {
        match codec {
            Codec::Jpeg => {
                // JPEG is encoded only while somebody wants it: with nobody until now, the
                // newest JPEG is from whenever somebody last did, not the camera's current
                // picture. Wait for the next one (this client's demand starts it).
                let current = self
                    .demand
                    .wants(Codec::Jpeg, crate::clock::MonoTime::now());
                Pending {
                    video: current
                        .then(|| self.latest_video.borrow().clone())
                        .flatten(),
                    ..Pending::default()
                }
            }
            Codec::H264 => {
                let gop = self.gop.borrow();
                if gop.first().is_some_and(|u| u.keyframe) && gop.len() <= KEY_GAP_FRAMES {
                    Pending {
                        h264: gop.iter().cloned().collect(),
                        ..Pending::default()
                    }
                } else {
                    self.demand.request_keyframe();
                    Pending {
                        need_key: true,
                        key_requested: true,
                        ..Pending::default()
                    }
                }
            }
        }
    }

    /// Connected clients of `codec`.
    pub fn clients_of(&self, codec: Codec) -> usize {
        self.clients
            .borrow()
            .values()
            .filter(|c| c.codec == codec)
            .count()
    }

    /// Hands an H.264 unit to every H.264 client (see the module's rules).
    pub fn publish_h264(&self, unit: Arc<H264Unit>) {
        let lost = self.next_seq.get().is_some_and(|want| unit.seq != want);
        self.next_seq.set(Some(unit.seq + 1));
        {
            let mut gop = self.gop.borrow_mut();
            if unit.keyframe {
                gop.clear();
            }
            if lost && !unit.keyframe {
                gop.clear();
            } else if !gop.is_empty() || unit.keyframe {
                if gop.len() < KEY_GAP_FRAMES {
                    gop.push(unit.clone());
                } else {
                    gop.clear();
                }
            }
        }
        if lost && !unit.keyframe {
            // A unit went missing between the encoder and here: nobody can decode on.
            self.demand.request_keyframe();
        }
        for slot in self.clients.borrow().values() {
            if slot.codec != Codec::H264 {
                continue;
            }
            if lost && !unit.keyframe {
                let mut p = slot.pending.borrow_mut();
                slot.restart_at_keyframe(&mut p);
                p.key_requested = true;
            }
            slot.offer_h264(&unit);
        }
    }

    /// The next JPEG frame published, or `None` after `timeout`.
    pub async fn next_video(&self, timeout: Duration) -> Option<Arc<VideoFrame>> {
        let (tx, rx) = async_channel::bounded(1);
        self.video_waiters.borrow_mut().push(tx);
        futures_lite::future::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(timeout).await;
            None
        })
        .await
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
            if slot.codec != Codec::Jpeg {
                continue;
            }
            let replaced = slot.pending.borrow_mut().video.replace(frame.clone());
            if replaced.is_some() {
                slot.skipped(1);
            }
            slot.wake();
        }
        for waiter in self.video_waiters.borrow_mut().drain(..) {
            let _ = waiter.try_send(frame.clone());
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

    /// Moves frames, units and chunks from the capture channels to the clients until all
    /// close.
    pub async fn run(
        self: Rc<Self>,
        video_rx: Receiver<Arc<VideoFrame>>,
        h264_rx: Receiver<Arc<H264Unit>>,
        audio_rx: Receiver<Arc<AudioChunk>>,
    ) {
        let video = async {
            while let Ok(frame) = video_rx.recv().await {
                self.publish_video(frame);
            }
        };
        let h264 = async {
            while let Ok(unit) = h264_rx.recv().await {
                self.publish_h264(unit);
            }
        };
        let audio = async {
            while let Ok(chunk) = audio_rx.recv().await {
                self.publish_audio(chunk);
            }
        };
        futures_lite::future::zip(futures_lite::future::zip(video, h264), audio).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 100.0;

    fn frame(ts: f64) -> Arc<VideoFrame> {
        Arc::new(VideoFrame::new(ts, 16, 16, &[ts as u8], false))
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
                Item::H264(u) => (if u.keyframe { "key" } else { "delta" }, u.ts),
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
    fn a_message_put_back_is_taken_again_unless_a_newer_frame_came() {
        let hub = hub(10);
        let client = hub.register(addr(), WireFormat::Binary);
        hub.publish_audio(chunk(NOW - 0.3));
        hub.publish_video(frame(NOW - 0.2));
        let audio = client.slot.take(NOW).expect("the chunk");
        client.slot.put_back(audio);
        let again = client.slot.take(NOW + 0.01).expect("the chunk again");
        assert!(matches!(again, Item::Audio(_)), "the chunk stays first");
        let video = client.slot.take(NOW).expect("the frame");
        client.slot.put_back(video);
        hub.publish_video(frame(NOW - 0.1));
        assert_eq!(drain(&client.slot, NOW), vec![("video", NOW - 0.1)]);
    }

    #[test]
    fn a_late_client_starts_from_the_newest_frame() {
        let hub = hub(10);
        let _watching = hub.register(addr(), WireFormat::Binary);
        hub.publish_video(frame(NOW - 0.2));
        hub.publish_video(frame(NOW - 0.1));
        let client = hub.register(addr(), WireFormat::Binary);
        assert_eq!(drain(&client.slot, NOW), vec![("video", NOW - 0.1)]);
    }

    #[test]
    fn a_client_of_an_unwatched_codec_waits_for_a_new_frame_not_an_old_one() {
        let hub = hub(10);
        let h264_only = hub.register_codec(addr(), WireFormat::Binary, Codec::H264);
        {
            let _left = hub.register(addr(), WireFormat::Binary);
            hub.publish_video(frame(NOW - 3.0));
        }
        // Nobody wanted JPEG since: the newest JPEG is 3 s old.
        let client = hub.register(addr(), WireFormat::Binary);
        assert!(drain(&client.slot, NOW).is_empty(), "no stale first frame");
        hub.publish_video(frame(NOW));
        assert_eq!(drain(&client.slot, NOW), vec![("video", NOW)]);
        drop(h264_only);
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

    fn unit(seq: u64, key: bool) -> Arc<H264Unit> {
        let ts = NOW - 1.0 + seq as f64 / 100.0;
        Arc::new(H264Unit::new(ts, (16, 16), key, vec![seq as u8]).with(false, seq))
    }

    /// Publishes units `from..to`, keyframes where `key(seq)`.
    fn publish_units(hub: &Hub, range: std::ops::Range<u64>, key: impl Fn(u64) -> bool) {
        for seq in range {
            hub.publish_h264(unit(seq, key(seq)));
        }
    }

    fn kinds(sent: &[(&'static str, f64)]) -> Vec<&'static str> {
        sent.iter().map(|s| s.0).collect()
    }

    #[test]
    fn a_joiner_gets_a_short_group_of_pictures_replayed_from_its_keyframe() {
        let hub = hub(10);
        publish_units(&hub, 0..3, |s| s == 0);
        let c = hub.register_codec(addr(), WireFormat::Binary, Codec::H264);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key", "delta", "delta"]);
        assert!(!hub.demand.keyframe_requested(), "no keyframe needed");
    }

    #[test]
    fn a_joiner_after_a_long_group_waits_for_a_requested_keyframe() {
        let hub = hub(10);
        publish_units(&hub, 0..(KEY_GAP_FRAMES as u64 + 2), |s| s == 0);
        let c = hub.register_codec(addr(), WireFormat::Binary, Codec::H264);
        assert!(drain(&c.slot, NOW).is_empty());
        assert!(hub.demand.take_keyframe_request(), "asked for a keyframe");
        let next = KEY_GAP_FRAMES as u64 + 2;
        publish_units(&hub, next..next + 3, |s| s == next + 1);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key", "delta"]);
        assert_eq!(
            c.slot.video_skipped.get(),
            1,
            "the delta before the keyframe"
        );
    }

    #[test]
    fn an_overflowing_client_restarts_at_a_keyframe_it_asks_for_only_when_it_can_take() {
        let hub = hub(10);
        publish_units(&hub, 0..1, |_| true);
        let c = hub.register_codec(addr(), WireFormat::Binary, Codec::H264);
        // Never taken: the backlog overflows, everything is dropped.
        publish_units(&hub, 1..(H264_BACKLOG as u64 + 5), |_| false);
        assert!(
            !hub.demand.take_keyframe_request(),
            "a stalled client asks nothing"
        );
        assert!(futures_lite::future::block_on(c.slot.ready()));
        assert!(c.slot.take(NOW).is_none(), "nothing decodable to send");
        assert!(hub.demand.take_keyframe_request(), "asks once it can take");
        let n = H264_BACKLOG as u64 + 5;
        publish_units(&hub, n..n + 3, |s| s == n + 1);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key", "delta"]);
        let skipped = c.slot.video_skipped.get();
        assert_eq!(skipped, H264_BACKLOG as u64 + 6, "all but the last two");
        assert_eq!(
            Stats::get(&hub.stats.codec(Codec::H264).client_skipped),
            skipped
        );
    }

    #[test]
    fn a_client_asking_to_resync_skips_to_a_keyframe_it_requests() {
        let hub = hub(10);
        publish_units(&hub, 0..1, |_| true);
        let c = hub.register_codec(addr(), WireFormat::Binary, Codec::H264);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key"]);
        publish_units(&hub, 1..3, |_| false);
        c.slot.resync();
        c.slot.resync(); // already waiting: no second request
        assert!(c.slot.take(NOW).is_none(), "the queued deltas are dropped");
        assert!(hub.demand.take_keyframe_request(), "asked for a keyframe");
        publish_units(&hub, 3..5, |s| s == 4);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key"]);
        assert_eq!(c.slot.video_skipped.get(), 3);
        // An MJPEG client has no keyframes to wait for.
        let m = hub.register(addr(), WireFormat::Binary);
        m.slot.resync();
        assert!(!hub.demand.take_keyframe_request());
    }

    #[test]
    fn a_keyframe_replaces_what_a_client_has_not_sent_yet() {
        let hub = hub(10);
        let c = hub.register_codec(addr(), WireFormat::Text, Codec::H264);
        hub.demand.take_keyframe_request();
        publish_units(&hub, 0..4, |s| s == 0 || s == 3);
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key"]);
        assert_eq!(c.slot.video_skipped.get(), 3);
    }

    #[test]
    fn a_unit_lost_before_the_hub_restarts_every_h264_client() {
        let hub = hub(10);
        let c = hub.register_codec(addr(), WireFormat::Text, Codec::H264);
        hub.demand.take_keyframe_request();
        publish_units(&hub, 0..2, |s| s == 0);
        assert_eq!(drain(&c.slot, NOW).len(), 2);
        hub.publish_h264(unit(3, false)); // 2 went missing
        assert!(drain(&c.slot, NOW).is_empty());
        assert!(hub.demand.take_keyframe_request());
        hub.publish_h264(unit(4, true));
        assert_eq!(kinds(&drain(&c.slot, NOW)), ["key"]);
    }

    #[test]
    fn codecs_do_not_mix_and_demand_follows_clients() {
        let hub = hub(10);
        let jpeg = hub.register(addr(), WireFormat::Text);
        {
            let h264 = hub.register_codec(addr(), WireFormat::Text, Codec::H264);
            assert_eq!(hub.demand.clients(Codec::H264), 1);
            hub.publish_video(frame(NOW - 0.5));
            publish_units(&hub, 0..1, |_| true);
            hub.publish_audio(chunk(NOW - 0.2));
            assert_eq!(kinds(&drain(&h264.slot, NOW)), ["key", "audio"]);
            assert_eq!(hub.clients_of(Codec::H264), 1);
        }
        assert_eq!(kinds(&drain(&jpeg.slot, NOW)), ["video", "audio"]);
        assert_eq!(hub.demand.clients(Codec::H264), 0);
        assert_eq!(hub.demand.clients(Codec::Jpeg), 1);
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
