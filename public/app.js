/* rpi-streamer browser client: connection, video, stats and controls.
 *
 * No framework and no build step. Plain scripts (not modules) so that the page also works
 * when opened from file:// with ?server=host:port. See docs/client.md.
 */
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const DEFAULT_SERVER = "ws://localhost:8080/stream";
  const BACKOFF_S = [1, 2, 3, 5, 8, 10];
  const STATUS_POLL_MS = 5000;
  const NO_FRAME_OFFLINE_MS = 4000;

  /* ---------- where the stream is ---------- */

  /* ?server=host:port, ?server=ws://host:port/stream (or http://…), else this page's host
   * when it was served over http(s), else localhost:8080. */
  function streamUrl(server) {
    const secure = location.protocol === "https:";
    let url;
    if (server) {
      const s = server.trim();
      if (/^wss?:\/\//i.test(s)) url = new URL(s);
      else if (/^https?:\/\//i.test(s)) url = new URL(s.replace(/^http/i, "ws"));
      else url = new URL((secure ? "wss://" : "ws://") + s);
    } else if (location.protocol === "http:" || location.protocol === "https:") {
      url = new URL((secure ? "wss://" : "ws://") + location.host + "/stream");
    } else {
      url = new URL(DEFAULT_SERVER);
    }
    if (url.pathname === "/" || url.pathname === "") url.pathname = "/stream";
    // The daemon's --auth-token: browsers cannot set headers on a WebSocket, so the page
    // passes on the token it was opened with.
    const token = params.get("token");
    if (token && !url.searchParams.has("token")) url.searchParams.set("token", token);
    return url;
  }

  /* The daemon's /status next to its /stream (same origin, or CORS: it allows any). */
  function statusUrl(ws) {
    const u = new URL(ws.href);
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = u.pathname.replace(/\/stream$/, "") + "/status";
    u.searchParams.delete("format");
    return u;
  }

  /* The daemon's /controls next to its /stream, with the page's ?token= if any. */
  function controlsUrl() {
    const u = statusUrl(streamUrl(params.get("server")));
    u.pathname = u.pathname.replace(/\/status$/, "/controls");
    u.searchParams.delete("video");
    return u;
  }

  /* Binary framing unless ?format=text. A server that does not know ?format=binary (the
   * seed) ignores it and sends text, which is understood as well: every message is parsed
   * by its own type, so nothing has to be negotiated. */
  const wantFormat = params.get("format") === "text" ? "text" : "binary";

  /* H.264 through WebCodecs where the browser decodes the daemon's stream, else MJPEG;
   * ?video=h264 or ?video=mjpeg forces one (h264 still needs WebCodecs: a secure context). */
  const forcedVideo = ["h264", "mjpeg"].includes(params.get("video")) ? params.get("video") : null;

  /* ---------- elements ---------- */

  const player = $("player");
  const canvas = $("video");
  const ctx2d = canvas.getContext("2d", { alpha: false });
  const statusEl = $("status");
  const statsEl = $("stats");
  const audioOverlay = $("audio-start");
  const placeholderEl = $("placeholder");
  const serverForm = $("server-form");
  const serverInput = $("server-input");
  const muteBtn = $("mute");
  const volumeEl = $("volume");
  const levelEl = $("level");

  /* ---------- state ---------- */

  const stats = {
    format: null,
    codec: null, // "h264" or "mjpeg": what this connection carries
    codecWhy: "", // why not H.264, when it is not
    framesReceived: 0,
    framesShown: 0,
    decodeDropped: 0, // arrived while another decode was in flight and replaced
    syncDropped: 0, // decoded but superseded before their presentation time
    decodeErrors: 0,
    bytes: 0,
    connects: 0,
    shownTimes: [], // performance.now() of recent presentations
    byteLog: [], // [performance.now(), bytes]
    latencyMs: null,
    openedAt: 0,
    firstFrameMs: null, // from the socket's open to the first picture drawn
    latencies: [], // recent capture-to-draw latencies (ms, daemon clock), for p50/p99
    avOffsetMs: null,
    width: 0,
    height: 0,
    lastFrameAt: 0,
    audioChunks: 0,
  };
  let server = null; // /status contents, when available
  let audioFormat = null; // {rate, channels} from binary headers or /status
  const audio = new AudioPlayer();
  let audioWanted = false;
  let h264Refused = false; // the browser could not decode the stream: MJPEG from now on
  /* A decoder that lost its place asks the daemon for a keyframe; at most one request per
   * half second: the daemon sends the next keyframe anyway. */
  let lastKeyRequest = 0;
  function requestKeyframe() {
    const now = performance.now();
    if (ws && ws.readyState === 1 && now - lastKeyRequest > 500) {
      lastKeyRequest = now;
      ws.send("keyframe");
    }
  }
  const h264 = new H264Decoder(onDecodedFrame, () => {
    if (h264.unsupported && !h264Refused) {
      h264Refused = true;
      stats.codecWhy = "this browser cannot decode " + (h264.codec || "the stream");
      reconnectNow();
      return;
    }
    requestKeyframe();
  });
  /* Where WebCodecs is missing (no secure context), ?video=h264 plays through MSE. */
  const mse = new MsePlayer($("mse-video"), (video, ts) => {
    presenter.show({ ts, bitmap: video, blob: null }, null);
  }, requestKeyframe);
  let h264Path = "webcodecs"; // or "mse"
  const clock = new ClockSync((text) => {
    if (ws && ws.readyState === 1) ws.send(text);
  });

  /* ---------- connection with backoff ---------- */

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let statusTimer = null;
  let state = "connecting";
  let connectedAt = performance.now();
  let stateDetail = "";

  function setState(s, detail) {
    state = s;
    stateDetail = detail || "";
    statusEl.textContent = s + (detail ? " — " + detail : "");
    statusEl.dataset.state = s.split(" ")[0];
  }

  /* Which video to ask for: H.264 if forced or if the daemon offers it and this browser's
   * VideoDecoder accepts its codec, else MJPEG (the reason is shown in the stats). */
  async function chooseCodec() {
    if (forcedVideo === "mjpeg") return ["mjpeg", "asked for with ?video=mjpeg"];
    if (h264Refused) return ["mjpeg", stats.codecWhy];
    h264Path = "webcodecs";
    if (!H264Decoder.available()) {
      const why = window.isSecureContext ? "this browser has no WebCodecs"
        : "H.264 needs a secure context (https:// or localhost)";
      // Asked for anyway: Media Source Extensions, with the <video> element's latency.
      if (forcedVideo === "h264" && MsePlayer.available()) {
        h264Path = "mse";
        return ["h264", why + "; playing it through MSE"];
      }
      return ["mjpeg", why];
    }
    if (forcedVideo === "h264") return ["h264", ""];
    let offer = null;
    try {
      const r = await fetchStatus(2000);
      if (r.ok) {
        server = await r.json();
        offer = server.codecs && server.codecs.h264;
      }
    } catch (e) {
      /* not our daemon, or unreachable: MJPEG, which every server speaks */
    }
    if (!offer || !offer.available) return ["mjpeg", "the server offers no H.264"];
    const codec = offer.codec || H264Decoder.codecForProfile(offer.profile);
    if (!(await H264Decoder.accepts(codec))) return ["mjpeg", "this browser cannot decode " + codec];
    return ["h264", ""];
  }

  let connectGeneration = 0;
  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    clearInterval(countdownTimer);
    const generation = ++connectGeneration;
    setState("connecting", streamUrl(params.get("server")).host);
    chooseCodec().then(([codec, why]) => {
      if (generation === connectGeneration) open(codec, why);
    });
  }

  function open(codec, why) {
    const url = streamUrl(params.get("server"));
    url.searchParams.set("format", wantFormat);
    if (codec === "h264") url.searchParams.set("video", "h264");
    stats.codec = codec;
    stats.codecWhy = why;
    h264.reset();
    mse.reset();
    serverInput.value = params.get("server") || url.host;
    setState("connecting", url.host);
    let socket;
    try {
      socket = new WebSocket(url.href);
    } catch (e) {
      setState("error", "bad server address: " + e.message);
      return;
    }
    socket.binaryType = "arraybuffer";
    ws = socket;
    connectedAt = performance.now();
    stats.shownTimes = [];
    stats.latencies = [];
    stats.byteLog = [];
    let opened = false;
    socket.onopen = () => {
      opened = true;
      stats.openedAt = performance.now();
      stats.firstFrameMs = null;
      clock.start();
      stats.connects++;
      stats.lastFrameAt = performance.now();
      audio.clear();
      setState("live");
      pollStatus();
    };
    socket.onmessage = (ev) => {
      if (socket !== ws) return;
      onMessage(ev.data);
      attempt = 0; // the server really works: the next failure retries quickly again
    };
    socket.onclose = (ev) => {
      if (socket !== ws) return;
      ws = null;
      clock.stop();
      clearTimeout(statusTimer);
      scheduleReconnect(opened ? closeReason(ev) : "cannot reach " + url.host);
    };
  }

  function closeReason(ev) {
    // 1001 with the daemon's shutdown reason: it is restarting. Other closes (too slow, no
    // answer to pings, flooding) carry their reason.
    if (ev.code === 1001 && (!ev.reason || ev.reason === "server shutting down")) {
      return "server restarting";
    }
    if (ev.reason) return ev.reason;
    return "connection lost";
  }

  function scheduleReconnect(why) {
    const delay = BACKOFF_S[Math.min(attempt, BACKOFF_S.length - 1)];
    attempt++;
    let left = delay;
    let reason = why;
    const show = () => setState("reconnecting in " + left + " s", reason);
    show();
    countdownTimer = setInterval(() => {
      left--;
      if (left > 0) show();
    }, 1000);
    retryTimer = setTimeout(connect, delay * 1000);
    // Explain a refusal the WebSocket API cannot report (HTTP status of the upgrade).
    checkAccess().then((problem) => {
      if (problem && retryTimer) {
        reason = problem;
        show();
      }
    });
  }

  function reconnectNow() {
    if (ws) {
      const old = ws;
      ws = null;
      clock.stop();
      old.close();
    }
    attempt = 0;
    connect();
  }

  /* ---------- /status: audio format for text mode, configured fps, camera state ---------- */

  async function fetchStatus(timeoutMs) {
    const ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
    const timer = ctl && setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const url = statusUrl(streamUrl(params.get("server")));
      const r = await fetch(url.href, { cache: "no-store", signal: ctl && ctl.signal });
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  async function pollStatus() {
    clearTimeout(statusTimer);
    try {
      const r = await fetchStatus(3000);
      if (r.ok) {
        server = await r.json();
        if (server.audio && server.audio.sample_rate && !audioFormat) {
          audioFormat = { rate: server.audio.sample_rate, channels: server.audio.channels };
        }
        updateAudioUi();
      }
    } catch (e) {
      // Not our daemon (the seed has no /status) or unreachable: the stream still works.
    }
    refreshLiveState();
    if (ws) statusTimer = setTimeout(pollStatus, STATUS_POLL_MS);
  }

  async function checkAccess() {
    try {
      const r = await fetchStatus(2000);
      if (r.status === 401) return "access denied: open the page with ?token=…";
    } catch (e) {
      /* unreachable: the countdown already says so */
    }
    return null;
  }

  let lastWasPlaceholder = false; // the newest frame is the daemon's "NO SIGNAL" picture
  function refreshLiveState() {
    if (!ws || ws.readyState !== 1) return;
    const videoState = server && server.video && server.video.state;
    const sourceDown = typeof videoState === "string" && videoState.startsWith("unavailable");
    const quiet = performance.now() - stats.lastFrameAt > NO_FRAME_OFFLINE_MS;
    // Binary frames say whether they are placeholders; text ones don't, and the page
    // asks /status instead (polled, so a little behind).
    const offline = stats.format === "binary" ? lastWasPlaceholder : sourceDown;
    if (offline || quiet) {
      setState("camera offline", sourceDown ? videoState.replace(/^unavailable: /, "") : "");
    } else if (state !== "live") {
      setState("live");
    }
    placeholderEl.hidden = !offline;
  }

  /* ---------- messages ---------- */

  const VIDEO = 1;
  const AUDIO = 2;
  const H264 = 3;
  const FLAG_PLACEHOLDER = 1;
  const FLAG_KEYFRAME = 2;

  function onMessage(data) {
    // Answers to our clock requests come as text in either framing.
    if (typeof data === "string" && clock.onReply(data)) return;
    if (typeof data === "string") {
      stats.bytes += data.length;
      stats.byteLog.push([performance.now(), data.length]);
      stats.format = "text";
      onTextMessage(data);
    } else {
      stats.bytes += data.byteLength;
      stats.byteLog.push([performance.now(), data.byteLength]);
      stats.format = "binary";
      onBinaryMessage(data);
    }
  }

  /* Layout: docs/client.md (16-byte little-endian header, then JPEG or PCM). */
  function onBinaryMessage(buf) {
    if (buf.byteLength < 16) return;
    const view = new DataView(buf);
    const kind = view.getUint8(0);
    const ts = view.getFloat64(4, true);
    if (kind === VIDEO) {
      const flags = view.getUint8(1);
      onVideo(ts, view.getUint16(12, true), view.getUint16(14, true),
        new Blob([new Uint8Array(buf, 16)], { type: "image/jpeg" }),
        (flags & FLAG_PLACEHOLDER) !== 0);
    } else if (kind === H264) {
      const flags = view.getUint8(1);
      onH264(ts, view.getUint16(12, true), view.getUint16(14, true),
        (flags & FLAG_KEYFRAME) !== 0, new Uint8Array(buf, 16), (flags & FLAG_PLACEHOLDER) !== 0);
    } else if (kind === AUDIO) {
      const channels = view.getUint8(1) || 1;
      const rate = view.getUint32(12, true);
      // Every browser platform is little-endian, like the wire: view the samples in place.
      onAudio(ts, rate, channels, new Int16Array(buf, 16, (buf.byteLength - 16) >> 1));
    }
  }

  function base64Bytes(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  /* The seed's format: video:<ts>:<w>:<h>:<base64>, audio:<ts>:<base64>. */
  function onTextMessage(s) {
    try {
      if (s.startsWith("video:")) {
        const a = s.indexOf(":", 6);
        const b = s.indexOf(":", a + 1);
        const c = s.indexOf(":", b + 1);
        if (a < 0 || b < 0 || c < 0) return;
        const jpeg = base64Bytes(s.slice(c + 1));
        onVideo(parseFloat(s.slice(6, a)), +s.slice(a + 1, b), +s.slice(b + 1, c),
          new Blob([jpeg], { type: "image/jpeg" }), false);
      } else if (s.startsWith("h264:")) {
        // h264:<ts>:<w>:<h>:<key>:<base64 Annex-B>
        const f = [5];
        for (let i = 0; i < 4; i++) f.push(s.indexOf(":", f[i] + 1));
        if (f.some((x) => x < 0)) return;
        const field = (i) => s.slice(f[i] + 1, f[i + 1]);
        onH264(parseFloat(s.slice(5, f[1])), +field(1), +field(2), field(3) === "1",
          base64Bytes(s.slice(f[4] + 1)), false);
      } else if (s.startsWith("audio:")) {
        const a = s.indexOf(":", 6);
        if (a < 0 || !audioFormat) return; // the rate and channels come from /status
        const bytes = base64Bytes(s.slice(a + 1));
        onAudio(parseFloat(s.slice(6, a)), audioFormat.rate, audioFormat.channels,
          new Int16Array(bytes.buffer, 0, bytes.length >> 1));
      }
    } catch (e) {
      stats.decodeErrors++; // a corrupt message: skip it
    }
  }

  /* ---------- video: decode off the main thread, newest wins ---------- */

  let decoding = false;
  let pending = null;

  function videoArrived(placeholder) {
    stats.framesReceived++;
    stats.lastFrameAt = performance.now();
    if (placeholder !== lastWasPlaceholder) {
      lastWasPlaceholder = placeholder;
      refreshLiveState();
      pollStatus(); // for the reason shown next to "camera offline"
    }
  }

  /* H.264: every unit goes to the decoder (a P-frame needs its predecessors); the newest
   * decoded frame is drawn, by the same presenter as JPEG pictures. */
  function onH264(ts, width, height, key, data, placeholder) {
    videoArrived(placeholder);
    if (stats.codec !== "h264") return;
    if (h264Path === "mse") {
      const v = $("mse-video");
      v.dataset.width = width;
      v.dataset.height = height;
      mse.push(ts, key, data, server && server.video ? server.video.fps : 30);
    } else {
      h264.push(ts, key, data);
    }
  }

  function onDecodedFrame(videoFrame) {
    presenter.add({ ts: videoFrame.timestamp / 1e6, bitmap: videoFrame, blob: null });
  }

  function onVideo(ts, width, height, blob, placeholder) {
    videoArrived(placeholder);
    const frame = { ts, width, height, blob, placeholder };
    if (decoding) {
      // A decode is in flight: keep only the newest waiting frame.
      if (pending) stats.decodeDropped++;
      pending = frame;
      return;
    }
    decode(frame);
  }

  async function decode(frame) {
    decoding = true;
    try {
      frame.bitmap = await createImageBitmap(frame.blob);
    } catch (e) {
      stats.decodeErrors++;
    }
    decoding = false;
    if (frame.bitmap) presenter.add(frame);
    if (pending) {
      const next = pending;
      pending = null;
      decode(next);
    }
  }

  /* Shows frames: at once without audio; with audio, when the audio clock reaches their
   * capture time (lip sync). Bitmaps are closed as soon as they are no longer needed. */
  const presenter = {
    queue: [],
    current: null,
    lateMs: [], // how late frames were ready relative to the audio clock
    rafPending: false,

    add(frame) {
      const clock = audio.clockAt(performance.now());
      if (clock === null) {
        this.flush();
        this.show(frame, null);
        return;
      }
      this.lateMs.push((clock - frame.ts) * 1000);
      if (this.lateMs.length > 50) this.lateMs.shift();
      this.queue.push(frame);
      // Bounded: a hidden tab stops animation frames but not the stream. Decoded H.264
      // frames come from a small pool the decoder needs back, so fewer of them are held.
      const cap = typeof VideoFrame === "function" && frame.bitmap instanceof VideoFrame ? 8 : 30;
      while (this.queue.length > cap) this.drop(this.queue.shift());
      this.tick();
    },

    tick() {
      if (this.rafPending || !this.queue.length) return;
      this.rafPending = true;
      requestAnimationFrame(() => {
        this.rafPending = false;
        this.presentDue();
        this.tick();
      });
    },

    presentDue() {
      const clock = audio.clockAt(performance.now());
      if (clock === null) {
        // Audio stopped or starving: no clock to follow, show the newest.
        const newest = this.queue.pop();
        this.flush();
        if (newest) this.show(newest, null);
        return;
      }
      let due = -1;
      for (let i = 0; i < this.queue.length; i++) if (this.queue[i].ts <= clock + 0.004) due = i;
      // A frame far ahead of the audio means the two timelines disagree: don't wait for it.
      if (due < 0 && this.queue[0].ts - clock > 1) due = this.queue.length - 1;
      if (due < 0) return;
      for (let i = 0; i < due; i++) this.drop(this.queue[i]);
      const frame = this.queue[due];
      this.queue = this.queue.slice(due + 1);
      this.show(frame, clock);
    },

    drop(frame) {
      stats.syncDropped++;
      frame.bitmap.close();
    },

    flush() {
      for (const f of this.queue) this.drop(f);
      this.queue = [];
    },

    show(frame, audioClock) {
      const bmp = frame.bitmap;
      // An ImageBitmap (JPEG) or a VideoFrame (H.264).
      const width = bmp.displayWidth || bmp.videoWidth || bmp.width;
      const height = bmp.displayHeight || bmp.videoHeight || bmp.height;
      if (canvas.width !== width || canvas.height !== height) {
        // Resolution changed (or first frame): the canvas follows the stream.
        canvas.width = width;
        canvas.height = height;
      }
      ctx2d.drawImage(bmp, 0, 0);
      if (bmp.close) bmp.close();
      frame.bitmap = null;
      if (this.current) this.current.blob = null;
      this.current = frame;
      stats.framesShown++;
      if (stats.firstFrameMs === null) stats.firstFrameMs = performance.now() - stats.openedAt;
      stats.width = canvas.width;
      stats.height = canvas.height;
      const now = performance.now();
      stats.shownTimes.push(now);
      // Capture to draw, on the daemon's clock (estimated by the clock exchange).
      stats.latencyMs = clock.now() - frame.ts * 1000;
      stats.latencies.push(stats.latencyMs);
      if (stats.latencies.length > 1000) stats.latencies.shift();
      stats.avOffsetMs = audioClock === null ? null : (frame.ts - audioClock) * 1000;
    },

    /* When video is ready later than its audio plays, buffer that much more audio. */
    adjustAudioDelay() {
      if (this.lateMs.length < 20) return;
      const sorted = this.lateMs.slice().sort((a, b) => a - b);
      const median = sorted[sorted.length >> 1];
      const report = audio.report;
      if (!report) return;
      if (median > 15) audio.setFloor(Math.min(400, report.targetMs + median + 10));
      this.lateMs = [];
    },
  };

  /* ---------- audio ---------- */

  function onAudio(ts, rate, channels, pcm) {
    stats.audioChunks++;
    if (!audioFormat || audioFormat.rate !== rate || audioFormat.channels !== channels) {
      audioFormat = { rate, channels };
      updateAudioUi();
    }
    audio.push(ts, rate, channels, pcm);
  }

  function updateAudioUi() {
    const available = !!audioFormat;
    // Started, then suspended by the browser (iOS: calls, lock screen): offer to resume.
    const needsResume = audioWanted && audio.ready && audio.ctx.state !== "running";
    audioOverlay.hidden = !available || (audioWanted && !needsResume);
    $("audio-controls").hidden = !audioWanted;
  }

  function startAudio() {
    if (!audioFormat) return;
    audioWanted = true;
    updateAudioUi();
    const force = params.get("audio") === "scriptprocessor";
    const failed = (e) => {
      audioWanted = false;
      updateAudioUi();
      setState(state, "audio failed: " + e.message);
    };
    let started;
    try {
      started = audio.start(audioFormat.rate, force);
    } catch (e) {
      failed(e);
      return;
    }
    started.then(() => updateAudioUi(), failed);
    // Safari suspends ("interrupted") the context on calls, lock screen or tab switches.
    audio.ctx.onstatechange = updateAudioUi;
  }

  audioOverlay.addEventListener("click", () => {
    if (audio.ctx) {
      audio.ctx.resume().then(updateAudioUi, () => {});
    } else {
      startAudio();
    }
  });

  muteBtn.addEventListener("click", () => {
    audio.setMuted(!audio.muted);
    muteBtn.textContent = audio.muted ? "Unmute" : "Mute";
    muteBtn.setAttribute("aria-pressed", String(audio.muted));
  });
  volumeEl.addEventListener("input", () => audio.setVolume(volumeEl.valueAsNumber));

  /* ---------- controls ---------- */

  function toggleStats() {
    statsEl.hidden = !statsEl.hidden;
    $("stats-toggle").setAttribute("aria-pressed", String(!statsEl.hidden));
    try {
      localStorage.setItem("rpi-streamer.stats", statsEl.hidden ? "0" : "1");
    } catch (e) {
      /* storage disabled */
    }
  }
  $("stats-toggle").addEventListener("click", toggleStats);
  try {
    if (localStorage.getItem("rpi-streamer.stats") === "1" || params.get("stats") === "1") {
      toggleStats();
    }
  } catch (e) {
    if (params.get("stats") === "1") toggleStats();
  }

  function toggleFullscreen() {
    const doc = document;
    const fsElement = doc.fullscreenElement || doc.webkitFullscreenElement;
    if (fsElement) {
      (doc.exitFullscreen || doc.webkitExitFullscreen).call(doc);
      return;
    }
    const request = player.requestFullscreen || player.webkitRequestFullscreen;
    if (request) {
      const p = request.call(player);
      if (p && p.catch) p.catch(() => player.classList.toggle("pseudo-fullscreen"));
    } else {
      // iPhone Safari has no element fullscreen: fill the viewport instead.
      player.classList.toggle("pseudo-fullscreen");
    }
  }
  $("fullscreen").addEventListener("click", toggleFullscreen);
  canvas.addEventListener("dblclick", toggleFullscreen);

  function snapshotName(ts) {
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return "rpi-streamer-" + d.getFullYear() + pad(d.getMonth() + 1) + pad(d.getDate()) +
      "-" + pad(d.getHours()) + pad(d.getMinutes()) + pad(d.getSeconds()) + ".jpg";
  }

  function saveBlob(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  /* The frame on screen, as the camera's own JPEG: no re-encoding. */
  $("snapshot").addEventListener("click", () => {
    const f = presenter.current;
    if (!f) return;
    if (f.blob) saveBlob(f.blob, snapshotName(f.ts));
    else canvas.toBlob((b) => b && saveBlob(b, snapshotName(f.ts)), "image/jpeg", 0.92);
  });

  serverForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = serverInput.value.trim();
    if (value) params.set("server", value);
    else params.delete("server");
    // Keep it in the address bar: a reload or a bookmark reconnects to the same place.
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
    server = null;
    audioFormat = null;
    reconnectNow();
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "f") toggleFullscreen();
    else if (ev.key === "s") toggleStats();
    else if (ev.key === "m" && audioWanted) muteBtn.click();
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && audio.ctx && audio.ctx.state !== "running" && audioWanted) {
      audio.ctx.resume().catch(() => {});
    }
  });

  /* ---------- stats ---------- */

  function windowed(now) {
    const since = now - 2000;
    while (stats.shownTimes.length && stats.shownTimes[0] < since) stats.shownTimes.shift();
    while (stats.byteLog.length && stats.byteLog[0][0] < since) stats.byteLog.shift();
    const span = Math.min(2000, now - connectedAt) / 1000;
    const bytes = stats.byteLog.reduce((sum, e) => sum + e[1], 0);
    return {
      fps: span > 0.5 ? stats.shownTimes.length / span : 0,
      kbps: span > 0.5 ? (bytes * 8) / 1000 / span : 0,
    };
  }
  /** A snapshot of the client's state, shown in the overlay and read by the tests. */
  function snapshot() {
    const now = performance.now();
    const w = windowed(now);
    const r = audio.report;
    return {
      state,
      detail: stateDetail,
      format: stats.format,
      codec: stats.codec,
      codecWhy: stats.codecWhy,
      h264Path: stats.codec === "h264" ? h264Path : null,
      h264Codec: h264Path === "mse" ? mse.codec : h264.codec,
      decodeQueue: h264Path === "mse" ? mse.queueSize : h264.queueSize,
      h264Skipped: h264.skipped + mse.skipped,
      h264Resyncs: h264.resyncs,
      h264Errors: h264.errors + mse.errors,
      h264LastError: h264.lastError,
      clockSynced: clock.synced,
      clockOffsetMs: clock.offsetMs,
      clockRttMs: clock.rttMs,
      latencies: stats.latencies.slice(),
      firstFrameMs: stats.firstFrameMs,
      fps: w.fps,
      configuredFps: server && server.video ? server.video.fps : null,
      kbps: w.kbps,
      width: stats.width,
      height: stats.height,
      latencyMs: stats.latencyMs,
      avOffsetMs: stats.avOffsetMs,
      framesReceived: stats.framesReceived,
      framesShown: stats.framesShown,
      droppedFrames: stats.decodeDropped + stats.syncDropped + h264.skipped + mse.skipped,
      decodeErrors: stats.decodeErrors + h264.errors + mse.errors,
      connects: stats.connects,
      audioState: audio.ctx ? audio.ctx.state : audioFormat ? "not started" : "none",
      audioOutput: audio.kind,
      audioRate: audioFormat ? audioFormat.rate : null,
      audioChunks: stats.audioChunks,
      audioBufferMs: r ? r.depthMs : null,
      audioTargetMs: r ? r.targetMs : null,
      audioUnderruns: r ? r.underruns : null,
      audioLevel: audio.level(),
      audioPeakHz: audio.peakHz(),
    };
  }

  function fmt(v, digits, unit) {
    return v === null || v === undefined ? "–" : v.toFixed(digits) + (unit || "");
  }

  function renderStats() {
    const s = snapshot();
    if (!statsEl.hidden) {
      const rows = [
        ["fps", fmt(s.fps, 1) + (s.configuredFps ? " / " + s.configuredFps : "")],
        ["resolution", s.width ? s.width + "×" + s.height : "–"],
        ["bitrate", s.kbps >= 1000 ? fmt(s.kbps / 1000, 2, " Mbit/s") : fmt(s.kbps, 0, " kbit/s")],
        ["latency" + (s.clockSynced ? "" : "*"), fmt(s.latencyMs, 0, " ms")],
        ["clock offset", s.clockSynced
          ? fmt(s.clockOffsetMs, 0, " ms") + " (±" + fmt(s.clockRttMs / 2, 0, " ms") + ")" : "–"],
        ["codec", (s.codec === "h264" ? "H.264 " + (s.h264Codec || "") : s.codec || "–") +
          (s.codecWhy && s.codec !== "h264" ? " (" + s.codecWhy + ")" : "")],
        ["dropped", String(s.droppedFrames) + (s.decodeErrors ? " (+" + s.decodeErrors + " bad)" : "")],
        ["format", s.format || "–"],
        ...(s.codec === "h264" ? [["decode queue", String(s.decodeQueue)]] : []),
        ["audio", s.audioState + (s.audioOutput ? " (" + s.audioOutput + ")" : "")],
        ["audio buffer", s.audioBufferMs === null ? "–"
          : fmt(s.audioBufferMs, 0) + " / " + fmt(s.audioTargetMs, 0, " ms")],
        ["A/V offset", fmt(s.avOffsetMs, 0, " ms")],
      ];
      const table = $("stats-table");
      table.textContent = "";
      for (const [k, v] of rows) {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        const td = document.createElement("td");
        th.textContent = k;
        td.textContent = v;
        tr.append(th, td);
        table.append(tr);
      }
    }
    if (audioWanted) levelEl.value = Math.min(1, s.audioLevel * 3);
    $("latency-note").hidden = s.clockSynced;
    refreshLiveState();
    presenter.adjustAudioDelay();
  }
  setInterval(renderStats, 500);

  const cameraControls = window.RpiControls.attach({
    panel: $("controls-panel"),
    button: $("controls-toggle"),
    url: controlsUrl,
  });

  // Read-only hooks for debugging from the console, and for the browser tests.
  window.rpiStreamer = {
    snapshot,
    reconnect: reconnectNow,
    streamUrl: () => streamUrl(params.get("server")).href,
    controls: cameraControls.state,
  };

  connect();
})();
