/* rpi-streamer browser client: H.264 through WebCodecs (docs/h264.md, docs/client.md).
 *
 * WebCodecs exists only in a secure context (https://, or http://localhost / 127.0.0.1); the
 * page falls back to MJPEG elsewhere. The daemon sends Annex-B access units with SPS and PPS
 * before every keyframe, so the decoder needs no `description` and is (re)configured from
 * the keyframe's own SPS. A P-frame needs everything back to its keyframe: after a decoder
 * error, a unit it could not take, or a backlog, nothing is fed until the next keyframe,
 * which is asked of the daemon (`onResync`).
 */
"use strict";

/** "avc1.PPCCLL" from the first SPS in an Annex-B access unit, or null. */
function h264CodecString(data) {
  for (let i = 0; i + 7 < data.length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1 && (data[i + 3] & 0x1f) === 7) {
      const hex = (b) => b.toString(16).padStart(2, "0").toUpperCase();
      return "avc1." + hex(data[i + 4]) + hex(data[i + 5]) + hex(data[i + 6]);
    }
  }
  return null;
}

class H264Decoder {
  /**
   * @param {(frame: VideoFrame) => void} onFrame gets every decoded frame (and must close it)
   * @param {(why: string) => void} onResync is told when a keyframe is needed
   */
  constructor(onFrame, onResync) {
    this.onFrame = onFrame;
    this.onResync = onResync;
    this.decoder = null;
    this.codec = null;
    this.waitingKey = true;
    this.unsupported = false; // the browser refused the stream's codec
    this.errors = 0;
    this.skipped = 0; // units not fed because a keyframe was needed
    this.resyncs = 0;
    this.lastError = "";
  }

  /** Decoded frames waiting in the decoder; more than this means we are behind. */
  static get MAX_QUEUE() {
    return 3;
  }

  static available() {
    return typeof VideoDecoder === "function" && typeof EncodedVideoChunk === "function";
  }

  /** The codec string a daemon's profile implies before its first keyframe names it. */
  static codecForProfile(profile) {
    return { main: "avc1.4D401F", high: "avc1.64001F" }[profile] || "avc1.42E01F";
  }

  /** Does this browser decode `codec` (with the low-latency option)? */
  static async accepts(codec) {
    if (!H264Decoder.available()) return false;
    try {
      const r = await VideoDecoder.isConfigSupported({ codec, optimizeForLatency: true });
      return !!r.supported;
    } catch (e) {
      return false;
    }
  }

  get queueSize() {
    return this.decoder && this.decoder.state === "configured" ? this.decoder.decodeQueueSize : 0;
  }

  /** Feeds one access unit (its capture time in UNIX seconds). */
  push(ts, key, data) {
    if (this.unsupported) return;
    if (this.waitingKey && !key) {
      this.skipped++;
      return;
    }
    if (key) {
      const codec = h264CodecString(data);
      if (codec && (codec !== this.codec || !this.decoder || this.decoder.state === "closed")) {
        this.configure(codec);
      }
    }
    if (!this.decoder || this.decoder.state !== "configured") {
      this.skipped++;
      this.needKey("decoder not ready");
      return;
    }
    if (!key && this.decoder.decodeQueueSize > H264Decoder.MAX_QUEUE) {
      this.skipped++;
      this.needKey("decoder behind");
      return;
    }
    try {
      this.decoder.decode(new EncodedVideoChunk({
        type: key ? "key" : "delta",
        // Microseconds: UNIX time fits a double's integer range exactly.
        timestamp: Math.round(ts * 1e6),
        data,
      }));
      this.waitingKey = false;
    } catch (e) {
      this.errors++;
      this.lastError = e.message;
      this.needKey("decode failed");
    }
  }

  needKey(why) {
    if (!this.waitingKey) this.resyncs++;
    this.waitingKey = true;
    this.onResync(why);
  }

  configure(codec) {
    this.close();
    this.codec = codec;
    const decoder = new VideoDecoder({
      output: (frame) => this.onFrame(frame),
      error: (e) => {
        // The decoder is closed now; the next keyframe configures a new one.
        if (decoder !== this.decoder) return;
        this.errors++;
        this.lastError = e.message;
        this.decoder = null;
        if (e.name === "NotSupportedError") this.unsupported = true;
        this.needKey("decoder error");
      },
    });
    this.decoder = decoder;
    try {
      decoder.configure({ codec, optimizeForLatency: true });
    } catch (e) {
      this.errors++;
      this.lastError = e.message;
      this.unsupported = true;
      this.decoder = null;
    }
  }

  /** Forgets the stream: a new connection starts at a keyframe again. */
  reset() {
    this.close();
    this.codec = null;
    this.waitingKey = true;
  }

  close() {
    const d = this.decoder;
    this.decoder = null;
    if (d && d.state !== "closed") {
      try {
        d.close();
      } catch (e) {
        /* already closed */
      }
    }
  }
}
