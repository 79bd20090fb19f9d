//! End-to-end tests: the real optx binary, real processes, real signals, real SQLite.
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
mod shell;
mod store_access;
mod trial_dirs;
mod workers;
