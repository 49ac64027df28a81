//! rpi-streamer: a camera (and microphone) streamed to browsers over one WebSocket.
//!
//! The data flow, one module each: [`config`] (flags) → [`capture`] (sources) →
//! [`pipeline`] (capture threads: [`jpeg`] encoding, placeholders, reopening) →
//! [`encode`] (the H.264 stage, and [`encode::Demand`]: which codecs anyone watches) →
//! [`media`] (frames and wire framing) → [`hub`] (fan-out) → [`server`] (HTTP/WebSocket).
//! [`clock`] maps capture instants to UNIX time; [`daemon`] wires it together.

pub mod capture;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod encode;
pub mod hub;
pub mod jpeg;
pub mod logger;
pub mod media;
pub mod mjpeg;
pub mod notify;
pub mod pipeline;
pub mod scale;
pub mod server;
pub mod stats;
