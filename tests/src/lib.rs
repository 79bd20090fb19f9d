//! End-to-end tests of optx live in `tests/e2e/`: they drive the real `optx` binary
//! (built by `cargo build --workspace`), real processes and real SQLite files.
