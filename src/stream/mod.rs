//! What travels from the encoder stages to the sessions: [`media`] (encoded units and their
//! wire forms, built once and shared) and [`hub`] (the fan-out: one mailbox per client, the
//! newest-frame rule per codec).
#![forbid(unsafe_code)]

pub mod hub;
pub mod media;
