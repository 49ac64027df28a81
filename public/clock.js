/* rpi-streamer browser client: the daemon's clock, estimated over the WebSocket.
 *
 * Capture times are the daemon's clock; "now" is this device's. They differ by however far
 * apart the two clocks are, which on a LAN without NTP can be seconds. So the page asks:
 * it sends `clock:<its Date.now()>`, the daemon answers `clock:<that>:<received>:<sent>`
 * (its UNIX seconds), and the four times of this NTP-style exchange give the offset between
 * the clocks, wrong by at most half the round trip's asymmetry. The sample with the shortest
 * round trip among the recent ones wins. A server that does not answer (the seed) leaves the
 * offset unknown, and the page says its latency assumes synchronised clocks.
 */
"use strict";

class ClockSync {
  /** @param {(text: string) => void} send sends a text message on the stream's socket */
  constructor(send) {
    this.send = send;
    this.samples = []; // {offsetMs, rttMs}
    this.offsetMs = null; // daemon clock − this clock
    this.rttMs = null;
    this.timer = null;
  }

  static get BURST() {
    return 5;
  }

  static get KEEP() {
    return 8;
  }

  /** Starts exchanging: a burst at once, then one every 10 s (clocks drift). */
  start() {
    this.stop();
    this.samples = [];
    this.offsetMs = null;
    this.rttMs = null;
    let sent = 0;
    const next = () => {
      this.send("clock:" + Date.now());
      sent++;
      this.timer = setTimeout(next, sent < ClockSync.BURST ? 200 : 10000);
    };
    next();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Takes a `clock:` answer; false if `text` is not one. */
  onReply(text) {
    if (!text.startsWith("clock:")) return false;
    const arrived = Date.now();
    const parts = text.slice(6).split(":");
    if (parts.length !== 3) return true;
    const [asked, received, sent] = [+parts[0], parts[1] * 1000, parts[2] * 1000];
    if (![asked, received, sent].every(Number.isFinite)) return true;
    const rttMs = arrived - asked - (sent - received);
    const offsetMs = (received - asked + (sent - arrived)) / 2;
    this.samples.push({ offsetMs, rttMs });
    if (this.samples.length > ClockSync.KEEP) this.samples.shift();
    const best = this.samples.reduce((a, b) => (b.rttMs < a.rttMs ? b : a));
    this.offsetMs = best.offsetMs;
    this.rttMs = best.rttMs;
    return true;
  }

  get synced() {
    return this.offsetMs !== null;
  }

  /** The daemon's clock now, in UNIX ms (this device's when not synced). */
  now() {
    return Date.now() + (this.offsetMs || 0);
  }
}
