/* rpi-streamer browser client: audio playback.
 *
 * PCM s16le chunks, each stamped with the capture time of its first sample, go into a
 * jitter buffer (PcmQueue) that an AudioWorklet drains on the audio thread. The queue keeps
 * a timeline: the capture time of the sample being played is always known, which is the
 * clock the video is aligned to. A ScriptProcessorNode runs the same queue on the main
 * thread where AudioWorklet is missing: browsers only offer it in secure contexts, and a
 * page opened as http://raspberrypi.local:8080/ is not one.
 *
 * Plain script (no module): it must also load from file://.
 */
"use strict";

/* Returns the PcmQueue class. Self-contained on purpose: its source text is also shipped
 * into the AudioWorklet's global scope, which shares nothing with this page. */
function definePcmQueue() {
  const FADE_FRAMES = 128; // fade in/out length: no click when playback starts or starves
  const MIN_TARGET_MS = 60;
  const MAX_TARGET_MS = 400;
  const CAPACITY_S = 2; // older audio is dropped: latency beats completeness
  const GAP_FILL_MAX_S = 0.5; // larger timestamp jumps restart the timeline instead

  class PcmQueue {
    /** outRate: the AudioContext's rate; audio of other rates is resampled linearly. */
    constructor(outRate) {
      this.outRate = outRate;
      this.capacity = Math.ceil(outRate * CAPACITY_S);
      this.ring = [new Float32Array(this.capacity), new Float32Array(this.capacity)];
      this.read = 0; // ring index of the next frame to play
      this.depth = 0; // frames queued
      this.readTs = null; // capture time of the frame at `read`
      this.targetMs = 80;
      this.floorMs = 0; // raised by the page when video arrives later than the audio plays
      this.playing = false;
      this.fadeIn = 0; // frames left in the current fade-in
      this.underruns = 0;
      this.droppedMs = 0;
      this.lastUnderrunAt = 0; // in output frames
      this.framesOut = 0;
      this.excessSince = null;
      this.quantumTs = null; // capture time of the first frame of the last render() call
      this.inRate = 0;
      this.phase = 0; // resampling position carried between chunks
      this.prev = [0, 0];
    }

    /** Frames queued, in milliseconds. */
    depthMs() {
      return (this.depth * 1000) / this.outRate;
    }

    /** Adds a chunk: ts = capture time of its first frame (s), pcm = Int16Array interleaved. */
    push(ts, rate, channels, pcm) {
      if (rate !== this.inRate) {
        this.inRate = rate;
        this.phase = 0;
      }
      const planar = this.toOutputRate(pcm, channels);
      const frames = planar[0].length;
      if (this.readTs === null) {
        this.readTs = ts;
      } else {
        const writeTs = this.readTs + this.depth / this.outRate;
        const gap = ts - writeTs;
        if (Math.abs(gap) > GAP_FILL_MAX_S) {
          // The source restarted or the clock jumped: start a new timeline.
          this.clear();
          this.readTs = ts;
        } else if (gap > 0.01) {
          // Chunks lost on the way (a slow client): keep the timeline true with silence.
          this.write(null, Math.round(gap * this.outRate));
        } else if (gap < -0.01) {
          // Overlap with what is queued: keep the queued audio, drop the repeat.
          const skip = Math.min(frames, Math.round(-gap * this.outRate));
          this.write(planar, frames - skip, skip);
          return;
        }
      }
      this.write(planar, frames, 0);
    }

    toOutputRate(pcm, channels) {
      const inFrames = Math.floor(pcm.length / channels);
      const chans = Math.min(channels, 2);
      if (this.inRate === this.outRate) {
        const out = [new Float32Array(inFrames), new Float32Array(inFrames)];
        for (let c = 0; c < 2; c++) {
          const src = Math.min(c, chans - 1);
          const dst = out[c];
          for (let i = 0; i < inFrames; i++) dst[i] = pcm[i * channels + src] / 32768;
        }
        return out;
      }
      // Linear interpolation; `phase` and `prev` make consecutive chunks join seamlessly.
      const step = this.inRate / this.outRate;
      const outFrames = Math.max(0, Math.floor((inFrames - this.phase) / step));
      const out = [new Float32Array(outFrames), new Float32Array(outFrames)];
      for (let c = 0; c < 2; c++) {
        const src = Math.min(c, chans - 1);
        const prev = this.prev[c];
        for (let i = 0; i < outFrames; i++) {
          const pos = this.phase + i * step;
          const k = Math.floor(pos);
          const frac = pos - k;
          const a = k - 1 < 0 ? prev : pcm[(k - 1) * channels + src] / 32768;
          const b = pcm[k * channels + src] / 32768;
          out[c][i] = a + (b - a) * frac;
        }
        if (inFrames > 0) this.prev[c] = pcm[(inFrames - 1) * channels + src] / 32768;
      }
      this.phase = this.phase + outFrames * step - inFrames;
      return out;
    }

    write(planar, frames, from) {
      if (frames <= 0) return;
      const overflow = this.depth + frames - this.capacity;
      if (overflow > 0) this.discard(overflow);
      let w = (this.read + this.depth) % this.capacity;
      for (let i = 0; i < frames; i++) {
        this.ring[0][w] = planar ? planar[0][from + i] : 0;
        this.ring[1][w] = planar ? planar[1][from + i] : 0;
        w = w + 1 === this.capacity ? 0 : w + 1;
      }
      this.depth += frames;
    }

    discard(frames) {
      const n = Math.min(frames, this.depth);
      this.read = (this.read + n) % this.capacity;
      this.depth -= n;
      this.readTs += n / this.outRate;
      this.droppedMs += (n * 1000) / this.outRate;
    }

    clear() {
      this.read = 0;
      this.depth = 0;
      this.readTs = null;
      this.playing = false;
    }

    effectiveTargetMs() {
      return Math.min(MAX_TARGET_MS, Math.max(this.targetMs, this.floorMs));
    }

    /** Fills `out` (two Float32Arrays of equal length) with the next frames. */
    render(out) {
      const n = out[0].length;
      const target = (this.effectiveTargetMs() * this.outRate) / 1000;
      this.framesOut += n;
      if (!this.playing) {
        this.quantumTs = null;
        out[0].fill(0);
        out[1].fill(0);
        if (this.depth >= target) {
          this.playing = true;
          this.fadeIn = FADE_FRAMES;
        }
        return;
      }
      this.trimExcess(target, n);
      this.quantumTs = this.readTs;
      const avail = Math.min(n, this.depth);
      // Starving: the last frames fade out, then silence until the buffer refills.
      const fadeOutFrom = avail < n ? avail - Math.min(avail, FADE_FRAMES) : n;
      let r = this.read;
      for (let i = 0; i < avail; i++) {
        let gain = 1;
        if (this.fadeIn > 0) {
          gain = 1 - this.fadeIn / FADE_FRAMES;
          this.fadeIn--;
        }
        if (i >= fadeOutFrom) gain *= (avail - i) / (avail - fadeOutFrom + 1);
        out[0][i] = this.ring[0][r] * gain;
        out[1][i] = this.ring[1][r] * gain;
        r = r + 1 === this.capacity ? 0 : r + 1;
      }
      out[0].fill(0, avail);
      out[1].fill(0, avail);
      this.read = r;
      this.depth -= avail;
      this.readTs += avail / this.outRate;
      if (avail < n) {
        this.playing = false;
        this.underruns++;
        // Starved: the network is jitterier than the buffer; buffer more from now on.
        this.targetMs = Math.min(MAX_TARGET_MS, this.targetMs + 20);
        this.lastUnderrunAt = this.framesOut;
      } else if (this.framesOut - this.lastUnderrunAt > this.outRate * 15) {
        // Calm for 15 s: try a shorter buffer (less latency).
        this.targetMs = Math.max(MIN_TARGET_MS, this.targetMs - 10);
        this.lastUnderrunAt = this.framesOut - this.outRate * 5;
      }
    }

    /* After a burst the buffer may hold far more than the target: that is latency for
     * nothing. If it stays so for a second, jump ahead with a short crossfade. */
    trimExcess(target, n) {
      const margin = Math.max(target, (60 * this.outRate) / 1000);
      if (this.depth <= target + margin) {
        this.excessSince = null;
        return;
      }
      if (this.excessSince === null) this.excessSince = this.framesOut;
      if (this.framesOut - this.excessSince < this.outRate) return;
      this.excessSince = null;
      const skip = Math.floor(this.depth - target - n - FADE_FRAMES);
      if (skip <= 0) return;
      let a = this.read;
      let b = (this.read + skip) % this.capacity;
      for (let i = 0; i < FADE_FRAMES; i++) {
        const g = i / FADE_FRAMES;
        for (let c = 0; c < 2; c++) {
          this.ring[c][b] = this.ring[c][a] * (1 - g) + this.ring[c][b] * g;
        }
        a = a + 1 === this.capacity ? 0 : a + 1;
        b = b + 1 === this.capacity ? 0 : b + 1;
      }
      this.discard(skip);
    }

    /** What the page needs: depth, target, timeline, counters. */
    report() {
      return {
        depthMs: this.depthMs(),
        targetMs: this.effectiveTargetMs(),
        readTs: this.quantumTs,
        playing: this.playing,
        underruns: this.underruns,
        droppedMs: this.droppedMs,
      };
    }
  }
  return PcmQueue;
}

/* Runs inside the AudioWorkletGlobalScope (its source text is loaded as a module). */
function pcmWorkletMain(PcmQueue) {
  class PcmPlayer extends AudioWorkletProcessor {
    constructor() {
      super();
      this.queue = new PcmQueue(sampleRate);
      this.lastReport = 0;
      this.port.onmessage = (ev) => {
        const m = ev.data;
        if (m.type === "pcm") this.queue.push(m.ts, m.rate, m.channels, m.pcm);
        else if (m.type === "floor") this.queue.floorMs = m.ms;
        else if (m.type === "clear") this.queue.clear();
      };
    }

    process(_inputs, outputs) {
      const out = outputs[0];
      // `currentTime` is the context time of this quantum's first frame; with the capture
      // time of that frame (readTs in the report) the page maps context to capture time.
      if (out.length >= 2) this.queue.render(out);
      else this.queue.render([out[0], new Float32Array(out[0].length)]);
      if (currentTime - this.lastReport >= 0.05) {
        this.lastReport = currentTime;
        const r = this.queue.report();
        r.ctxTime = currentTime;
        this.port.postMessage(r);
      }
      return true;
    }
  }
  registerProcessor("pcm-player", PcmPlayer);
}

/* The page's side: AudioContext, player node, volume, level meter, audio clock. */
class AudioPlayer {
  constructor() {
    this.ctx = null;
    this.node = null;
    this.gain = null;
    this.analyser = null;
    this.kind = null; // "worklet" | "scriptprocessor"
    this.report = null; // latest PcmQueue report (+ ctxTime)
    this.queue = null; // main-thread queue (ScriptProcessor fallback)
    this.ready = false;
    this.muted = false;
    this.volume = 1;
    this.floorMs = 0;
  }

  /** Must be called from a user gesture (click/tap): autoplay policies, and Safari. */
  start(rate, forceScriptProcessor) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) throw new Error("this browser has no Web Audio");
    try {
      // Playing at the stream's own rate avoids resampling in our code.
      this.ctx = new Ctx({ sampleRate: rate, latencyHint: "interactive" });
    } catch (e) {
      this.ctx = new Ctx();
    }
    const ctx = this.ctx;
    // iOS Safari only unlocks output for sound started inside the gesture.
    const silent = ctx.createBuffer(1, 1, ctx.sampleRate);
    const unlock = ctx.createBufferSource();
    unlock.buffer = silent;
    unlock.connect(ctx.destination);
    unlock.start(0);
    const resumed = ctx.resume();
    this.gain = ctx.createGain();
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.gain.connect(ctx.destination);
    this.applyVolume();
    const useWorklet = !forceScriptProcessor && ctx.audioWorklet && typeof Blob !== "undefined";
    if (useWorklet) {
      return resumed.then(() => this.startWorklet()).catch((e) => {
        console.warn("AudioWorklet unavailable, using ScriptProcessor:", e);
        this.startScriptProcessor();
      });
    }
    this.startScriptProcessor();
    return resumed;
  }

  async startWorklet() {
    const source = `"use strict";(${pcmWorkletMain})((${definePcmQueue})());`;
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    try {
      await this.ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const node = new AudioWorkletNode(this.ctx, "pcm-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [2],
    });
    node.port.onmessage = (ev) => {
      this.report = ev.data;
    };
    this.attach(node, "worklet");
  }

  startScriptProcessor() {
    const PcmQueue = definePcmQueue();
    this.queue = new PcmQueue(this.ctx.sampleRate);
    // 1024 frames ≈ 23 ms at 44.1 kHz: small, yet large enough for the main thread.
    const node = this.ctx.createScriptProcessor(1024, 0, 2);
    node.onaudioprocess = (ev) => {
      const out = ev.outputBuffer;
      this.queue.render([out.getChannelData(0), out.getChannelData(1)]);
      const r = this.queue.report();
      r.ctxTime = ev.playbackTime;
      this.report = r;
    };
    this.attach(node, "scriptprocessor");
  }

  attach(node, kind) {
    this.node = node;
    this.kind = kind;
    node.connect(this.analyser);
    node.connect(this.gain);
    this.ready = true;
    if (this.floorMs) this.setFloor(this.floorMs);
  }

  /** Queues one chunk: Int16Array of interleaved samples. */
  push(ts, rate, channels, pcm) {
    if (!this.ready) return;
    if (this.queue) this.queue.push(ts, rate, channels, pcm);
    else this.node.port.postMessage({ type: "pcm", ts, rate, channels, pcm }, [pcm.buffer]);
  }

  /** Drops what is queued (a new connection starts a new timeline). */
  clear() {
    if (!this.ready) return;
    if (this.queue) this.queue.clear();
    else this.node.port.postMessage({ type: "clear" });
    this.report = null;
  }

  /** Asks for at least `ms` of buffering, so late video can still be shown in sync. */
  setFloor(ms) {
    this.floorMs = ms;
    if (!this.ready) return;
    if (this.queue) this.queue.floorMs = ms;
    else this.node.port.postMessage({ type: "floor", ms });
  }

  running() {
    return !!this.ctx && this.ctx.state === "running" && this.ready;
  }

  /* The capture time being heard at page time `perfNow` (performance.now()), or null when
   * nothing is playing. getOutputTimestamp accounts for the output device's latency. */
  clockAt(perfNow) {
    const r = this.report;
    if (!this.running() || !r || r.readTs === null || !r.playing) return null;
    let heardCtxTime;
    if (this.ctx.getOutputTimestamp) {
      const t = this.ctx.getOutputTimestamp();
      if (t.contextTime === undefined || !t.performanceTime) return null;
      heardCtxTime = t.contextTime + (perfNow - t.performanceTime) / 1000;
    } else {
      heardCtxTime = this.ctx.currentTime - (this.ctx.outputLatency || this.ctx.baseLatency || 0);
    }
    return r.readTs + (heardCtxTime - r.ctxTime);
  }

  setVolume(v) {
    this.volume = v;
    this.applyVolume();
  }

  setMuted(m) {
    this.muted = m;
    this.applyVolume();
  }

  applyVolume() {
    if (!this.gain) return;
    const v = this.muted ? 0 : this.volume;
    // A short ramp: an instant gain step clicks.
    this.gain.gain.setTargetAtTime(v, this.ctx.currentTime, 0.015);
  }

  /** RMS level (0..1) of what the player outputs, before the volume control. */
  level() {
    if (!this.analyser) return 0;
    const buf = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    return Math.sqrt(sum / buf.length);
  }

  /** Frequency (Hz) of the strongest spectral peak of the output. */
  peakHz() {
    if (!this.analyser) return 0;
    const bins = new Float32Array(this.analyser.frequencyBinCount);
    this.analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    return (best * this.ctx.sampleRate) / this.analyser.fftSize;
  }
}
