//! Fuzz target: any bytes as a client's request head, through the parser, the socket reader,
//! the WebSocket upgrade check and the static-file path rules. The invariants live in
//! `../invariants.rs`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

#[path = "../invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check(data));
