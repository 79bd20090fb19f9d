//! End-to-end tests: the real optx binary, real processes, real signals, real SQLite and a
//! real PostgreSQL server (`OPTX_TEST_PG_URL`) and a real single-node Slurm (`SLURM_CONF`):
//! run them with scripts/test.sh, which starts both.
//! Build first (`cargo build --workspace`); `OPTX_BIN` overrides the binary's path.

mod bayes;
mod chaos;
mod cli;
mod common;
mod config_errors;
mod external;
mod failures;
mod interrupts;
mod options;
mod plugins;
mod recovery;
mod resume;
mod run;
mod server;
mod shell;
mod slurm;
mod stopping;
mod store_access;
mod trial_dirs;
mod workers;
