//! Replays every committed fuzz input through the same bodies the fuzz
//! targets run (`sprite_tasks::testing::fuzzing`), on stable Rust, in plain
//! `cargo test`: the seed corpora in `fuzz/corpus/<target>/` and the inputs
//! that once broke a property, kept in `fuzz/regressions/<target>/`.
//!
//! A target's directories missing or empty fail the test: a renamed
//! directory must not silently replay nothing.

use std::path::{Path, PathBuf};

use sprite_tasks::testing::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `body` on every input of `target`, naming the file that fails.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for fuzz target {target}");
    for file in files {
        let data = std::fs::read(&file).expect("a readable corpus file");
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", file.display());
    }
}

#[test]
fn http_request_corpus() {
    replay("http_request", fuzzing::http_request);
}

#[test]
fn duration_corpus() {
    replay("duration", fuzzing::duration);
}

#[test]
fn api_request_corpus() {
    replay("api_request", fuzzing::api_request);
}

#[test]
fn tasks_model_corpus() {
    replay("tasks_model", fuzzing::tasks_model);
}

#[test]
fn store_crash_corpus() {
    replay("store_crash", fuzzing::store_crash);
}

#[test]
fn reactor_corpus() {
    replay("reactor", fuzzing::reactor);
}
