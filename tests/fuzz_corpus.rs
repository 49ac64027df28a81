//! Replays every input of the fuzz corpus (`fuzz/corpus/http_request/`: the committed seeds
//! and any crash reproducers added there) through the fuzz target's own invariant checks, so
//! plain `cargo test` guards them without a fuzzer or a nightly toolchain.

#[path = "../fuzz/invariants.rs"]
mod invariants;

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_keeps_the_request_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_request");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 40,
        "corpus shrank to {} inputs",
        inputs.len()
    );
    let broken: Vec<String> = inputs
        .iter()
        .filter_map(|input| {
            let data = std::fs::read(input).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| invariants::check(&data));
            let why = outcome.err()?;
            let why = why
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| why.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("{}: {why}", input.display()))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "invariants broken:\n{}",
        broken.join("\n")
    );
}
