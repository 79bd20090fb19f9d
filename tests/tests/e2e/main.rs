//! End-to-end tests: the real optx binary, real processes, real signals, real SQLite and a
//! real PostgreSQL server (`OPTX_TEST_PG_URL`: run them with scripts/test.sh).
//! Build first (`cargo build --workspace`); `OPTX_BIN` overrides the binary's path.

mod bayes;
mod chaos;
mod common;
mod config_errors;
mod failures;
mod interrupts;
mod options;
mod plugins;
mod recovery;
mod resume;
mod run;
mod server;
mod shell;
mod store_access;
mod trial_dirs;
mod workers;
