/* rpi-streamer browser client: H.264 through Media Source Extensions, for pages that are not
 * a secure context (http://pi.local/), where WebCodecs does not exist.
 *
 * Each access unit becomes one fragment of a fragmented MP4 (ISO/IEC 14496-12: moof + mdat,
 * after an ftyp + moov built from the first keyframe's SPS and PPS, avcC per 14496-15),
 * appended to a SourceBuffer of a hidden <video>. Media time 0 is the first keyframe's
 * capture time, so a presented frame's mediaTime gives its capture time back. A <video> keeps
 * its own buffer; playback is pulled to the live edge whenever it lags. Used only when asked
 * for (?video=h264 in an insecure context): docs/client.md has the measured latency of both
 * paths, and why MJPEG is the default there.
 */
"use strict";

const MSE_TIMESCALE = 90000;

function mp4Box(type, ...parts) {
  let len = 8;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  const view = new DataView(out.buffer);
  view.setUint32(0, len);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  let at = 8;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Big-endian bytes: u(32, x), u(16, x), u(8, x)… */
function mp4Bytes(...fields) {
  const out = [];
  for (let i = 0; i < fields.length; i += 2) {
    const bits = fields[i];
    let v = fields[i + 1];
    if (bits === 64) {
      const hi = Math.floor(v / 2 ** 32);
      out.push(...mp4Bytes(32, hi, 32, v - hi * 2 ** 32));
      continue;
    }
    for (let b = bits - 8; b >= 0; b -= 8) out.push(Math.floor(v / 2 ** b) & 0xff);
  }
  return new Uint8Array(out);
}

/** The NAL units of an Annex-B access unit (without start codes). */
function annexBNalUnits(data) {
  const units = [];
  let start = -1;
  let i = 0;
  while (i + 2 < data.length) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) {
      if (start >= 0) units.push(data.subarray(start, i - (i > 0 && data[i - 1] === 0 ? 1 : 0)));
      i += 3;
      start = i;
    } else {
      i++;
    }
  }
  if (start >= 0) units.push(data.subarray(start));
  return units.filter((u) => u.length > 0);
}

const MATRIX = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000];

function mp4Init(sps, pps, width, height) {
  const avcC = mp4Box("avcC", mp4Bytes(8, 1, 8, sps[1], 8, sps[2], 8, sps[3], 8, 0xff, 8, 0xe1,
    16, sps.length), sps, mp4Bytes(8, 1, 16, pps.length), pps);
  const avc1 = mp4Box("avc1", mp4Bytes(32, 0, 16, 0, 16, 1, 32, 0, 32, 0, 32, 0, 32, 0,
    16, width, 16, height, 32, 0x480000, 32, 0x480000, 32, 0, 16, 1), new Uint8Array(32),
    mp4Bytes(16, 0x18, 16, 0xffff), avcC);
  const matrix = mp4Bytes(...MATRIX.flatMap((v) => [32, v]));
  const stbl = mp4Box("stbl",
    mp4Box("stsd", mp4Bytes(32, 0, 32, 1), avc1),
    mp4Box("stts", mp4Bytes(32, 0, 32, 0)),
    mp4Box("stsc", mp4Bytes(32, 0, 32, 0)),
    mp4Box("stsz", mp4Bytes(32, 0, 32, 0, 32, 0)),
    mp4Box("stco", mp4Bytes(32, 0, 32, 0)));
  const minf = mp4Box("minf", mp4Box("vmhd", mp4Bytes(32, 1, 32, 0, 32, 0)),
    mp4Box("dinf", mp4Box("dref", mp4Bytes(32, 0, 32, 1), mp4Box("url ", mp4Bytes(32, 1)))), stbl);
  const mdia = mp4Box("mdia",
    mp4Box("mdhd", mp4Bytes(32, 0, 32, 0, 32, 0, 32, MSE_TIMESCALE, 32, 0, 16, 0x55c4, 16, 0)),
    mp4Box("hdlr", mp4Bytes(32, 0, 32, 0, 32, 0x76696465, 32, 0, 32, 0, 32, 0),
      new TextEncoder().encode("video\0")),
    minf);
  const tkhd = mp4Box("tkhd", mp4Bytes(32, 3, 32, 0, 32, 0, 32, 1, 32, 0, 32, 0, 32, 0, 32, 0,
    16, 0, 16, 0, 16, 0, 16, 0), matrix, mp4Bytes(32, width * 65536, 32, height * 65536));
  const mvhd = mp4Box("mvhd", mp4Bytes(32, 0, 32, 0, 32, 0, 32, 1000, 32, 0, 32, 0x10000,
    16, 0x100, 16, 0, 32, 0, 32, 0), matrix, new Uint8Array(24), mp4Bytes(32, 2));
  const mvex = mp4Box("mvex", mp4Box("trex", mp4Bytes(32, 0, 32, 1, 32, 1, 32, 0, 32, 0, 32, 0)));
  return concatBytes(mp4Box("ftyp", new TextEncoder().encode("iso5"), mp4Bytes(32, 512),
    new TextEncoder().encode("iso5iso6avc1mp41")), mp4Box("moov", mvhd, mp4Box("trak", tkhd, mdia), mvex));
}

function mp4Fragment(seq, decodeTime, duration, key, samples) {
  let size = 0;
  for (const s of samples) size += 4 + s.length;
  const trunFlags = 0x000001 | 0x000100 | 0x000200 | 0x000400;
  const sampleFlags = key ? 0x02000000 : 0x01010000;
  const build = (dataOffset) => mp4Box("moof",
    mp4Box("mfhd", mp4Bytes(32, 0, 32, seq)),
    mp4Box("traf",
      mp4Box("tfhd", mp4Bytes(32, 0x020000, 32, 1)),
      mp4Box("tfdt", mp4Bytes(8, 1, 24, 0, 64, decodeTime)),
      mp4Box("trun", mp4Bytes(32, trunFlags, 32, 1, 32, dataOffset, 32, duration, 32, size,
        32, sampleFlags))));
  const moofLen = build(0).length;
  const mdat = new Uint8Array(8 + size);
  new DataView(mdat.buffer).setUint32(0, mdat.length);
  mdat.set([0x6d, 0x64, 0x61, 0x74], 4);
  let at = 8;
  for (const s of samples) {
    new DataView(mdat.buffer).setUint32(at, s.length);
    mdat.set(s, at + 4);
    at += 4 + s.length;
  }
  return concatBytes(build(moofLen + 8), mdat);
}

function concatBytes(...parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

class MsePlayer {
  /**
   * @param {HTMLVideoElement} video a muted element the fragments play in
   * @param {(video: HTMLVideoElement, ts: number) => void} onFrame told of each presented
   *   frame with its capture time (UNIX s)
   * @param {(why: string) => void} onResync told when a keyframe is needed
   */
  constructor(video, onFrame, onResync) {
    this.video = video;
    this.onFrame = onFrame;
    this.onResync = onResync;
    this.errors = 0;
    this.skipped = 0;
    this.codec = null;
    this.reset();
  }

  static available() {
    return typeof MediaSource === "function" && typeof HTMLVideoElement === "function" &&
      "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  }

  static accepts(codec) {
    return MsePlayer.available() && MediaSource.isTypeSupported('video/mp4; codecs="' + codec + '"');
  }

  reset() {
    this.source = null;
    this.buffer = null;
    this.queue = [];
    this.seq = 0;
    this.firstTs = null;
    this.lastTs = null;
    this.waitingKey = true;
    this.video.removeAttribute("src");
    try {
      this.video.load();
    } catch (e) {
      /* nothing loaded */
    }
  }

  get queueSize() {
    return this.queue.length;
  }

  push(ts, key, data, fps) {
    if (this.waitingKey && !key) {
      this.skipped++;
      return;
    }
    const nals = annexBNalUnits(data);
    if (!this.buffer && key) {
      const sps = nals.find((n) => (n[0] & 0x1f) === 7);
      const pps = nals.find((n) => (n[0] & 0x1f) === 8);
      if (!sps || !pps) {
        this.skipped++;
        return;
      }
      this.start(sps, pps, data);
    }
    if (this.queue.length > 30) {
      // The <video> does not keep up: start again at the next keyframe.
      this.skipped += this.queue.length;
      this.queue = [];
      this.waitingKey = true;
      this.onResync("media buffer behind");
      return;
    }
    this.waitingKey = false;
    if (this.firstTs === null) this.firstTs = ts;
    const duration = Math.round(MSE_TIMESCALE / (fps || 30));
    const decodeTime = Math.max(0, Math.round((ts - this.firstTs) * MSE_TIMESCALE));
    const samples = nals.filter((n) => ![7, 8, 9].includes(n[0] & 0x1f));
    this.queue.push(mp4Fragment(++this.seq, decodeTime, duration, key, samples));
    this.lastTs = ts;
    this.feed();
  }

  start(sps, pps, data) {
    this.codec = h264CodecString(data);
    const width = this.video.dataset.width | 0 || 640;
    const height = this.video.dataset.height | 0 || 480;
    this.queue.push(mp4Init(sps, pps, width, height));
    const source = new MediaSource();
    this.source = source;
    this.video.src = URL.createObjectURL(source);
    source.addEventListener("sourceopen", () => {
      if (source !== this.source) return;
      URL.revokeObjectURL(this.video.src);
      try {
        this.buffer = source.addSourceBuffer('video/mp4; codecs="' + this.codec + '"');
      } catch (e) {
        this.errors++;
        return;
      }
      this.buffer.addEventListener("updateend", () => this.feed());
      this.buffer.addEventListener("error", () => this.errors++);
      this.feed();
      this.video.play().catch(() => {});
      const onPresented = (now, meta) => {
        if (source !== this.source) return;
        this.onFrame(this.video, this.firstTs + meta.mediaTime);
        this.video.requestVideoFrameCallback(onPresented);
      };
      this.video.requestVideoFrameCallback(onPresented);
    }, { once: true });
    // Placeholder until sourceopen: the init segment waits in the queue.
    this.buffer = { updating: true, placeholder: true };
  }

  feed() {
    const b = this.buffer;
    if (!b || b.placeholder || b.updating || !this.queue.length) return;
    const v = this.video;
    // Pulled to the live edge: a <video> otherwise plays everything it was given.
    if (b.buffered.length) {
      const end = b.buffered.end(b.buffered.length - 1);
      if (end - v.currentTime > 0.15) v.currentTime = end - 0.02;
      if (v.currentTime > 20 && b.buffered.start(0) < v.currentTime - 10) {
        b.remove(0, v.currentTime - 10);
        return;
      }
    }
    try {
      b.appendBuffer(this.queue.shift());
    } catch (e) {
      this.errors++;
      this.queue = [];
      this.waitingKey = true;
      this.onResync("append failed");
    }
  }
}
