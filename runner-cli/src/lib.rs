//! optx: closed-loop adaptive experiments from a TOML file.
//!
//! Layers (a module uses only lower ones; modules of one layer do not use each other):
//!
//! ```text
//! L4  cli        argv, terminal, exit codes
//! L3  scheduler  the closed loop: dispatcher thread, worker pool, channels, signals
//! L2  runners    adapters behind TrialRunner: command (local process), plugin (cdylib),
//!                external and slurm (jobs elsewhere, followed by one driver)
//! L1  config, generate, stopping, store, exec, report
//! L0  domain     pure types and rules
//! ```

pub mod cli;
pub mod config;
pub mod domain;
pub mod exec;
pub mod generate;
pub mod report;
pub mod runners;
pub mod scheduler;
pub mod stopping;
pub mod store;
