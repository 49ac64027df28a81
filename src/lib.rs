//! rpi-streamer: a camera (and microphone) streamed to browsers over one WebSocket.
//!
//! The data flow, one module each: [`config`] (flags) → [`capture`] (sources: where a frame
//! is captured) → [`pipeline`] (the capture threads: supervision, placeholders, reopening)
//! → [`encode`] (one stage per codec somebody watches: JPEG, H.264) → [`stream`] (encoded
//! units and the fan-out hub) → [`server`] (HTTP, WebSocket and multipart sessions: where a
//! unit is sent). [`clock`] maps capture instants to UNIX time; [`tls`] picks the certificate for HTTPS;
//! [`daemon`] wires it together.

#![warn(missing_docs)]

pub mod capture;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod encode;
pub mod logger;
pub mod notify;
pub mod pipeline;
pub mod server;
pub mod stats;
pub mod stream;
pub mod tls;
