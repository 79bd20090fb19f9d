//! L1: operating-system processes.
//!
//! Trials run under a *shepherd*: a small helper process (`optx __shepherd`, started once
//! per run in its own process group) that spawns each trial in a process group of its own
//! with stdin from /dev/null and stdout/stderr going straight to files in the trial dir,
//! reaps it, kills whatever the trial left in its group, and writes the exit status to
//! `exit_status.json` in the trial dir. Trials therefore outlive optx (a kill -9 of optx
//! leaves them running and their exit status is still recorded), and a restarted optx,
//! which is not their parent, can read how they ended. One shepherd per run rather than a
//! supervisor per trial keeps process creation to one spawn per trial.
//!
//! Uses only `domain` (nothing of it, in fact): the runners above decide what to run.

mod client;
mod shepherd;

use std::path::Path;

pub use client::{ProcEvent, Shepherd};
pub use shepherd::serve as serve_shepherd;

use serde::{Deserialize, Serialize};

/// What the shepherd is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub trial: u64,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    /// The trial dir: `stdout.log`, `stderr.log`, `run.json` and `exit_status.json` go here.
    pub dir: std::path::PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
    SpawnError(String),
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        *self == ExitInfo::Code(0)
    }

    pub fn describe(&self) -> String {
        match self {
            ExitInfo::Code(c) => format!("exit code {c}"),
            ExitInfo::Signal(s) => format!("killed by signal {s} ({})", signal_name(*s)),
            ExitInfo::SpawnError(e) => format!("could not start: {e}"),
        }
    }
}

/// The process a trial runs as, recorded in `run.json` right after the spawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`), to tell a reused pid apart.
    pub start: Option<u64>,
}

pub const RUN_FILE: &str = "run.json";
pub const EXIT_FILE: &str = "exit_status.json";
pub const STDOUT_FILE: &str = "stdout.log";
pub const STDERR_FILE: &str = "stderr.log";

pub fn signal_name(s: i32) -> &'static str {
    match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// `(start time, state)` of a process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The start time of a process (clock ticks since boot), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(s, _)| s)
}

/// Whether the process `pid` that started at `start` still runs (a zombie does not).
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((s, state)) => state != 'Z' && start.is_none_or(|want| want == s),
        None => false,
    }
}

/// Send `sig` to a process group; false if the group is gone.
pub fn kill_group(pgid: u32, kill: bool) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) else { return false };
    let sig = if kill { rustix::process::Signal::KILL } else { rustix::process::Signal::TERM };
    rustix::process::kill_process_group(pid, sig).is_ok()
}

/// Whether any process of the group still exists.
pub fn group_exists(pgid: u32) -> bool {
    rustix::process::Pid::from_raw(pgid as i32).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

pub fn read_exit(dir: &Path) -> Option<ExitInfo> {
    serde_json::from_slice(&std::fs::read(dir.join(EXIT_FILE)).ok()?).ok()
}

pub fn read_run_info(dir: &Path) -> Option<RunInfo> {
    serde_json::from_slice(&std::fs::read(dir.join(RUN_FILE)).ok()?).ok()
}

/// Write a file whole or not at all (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// This machine's name, for store ownership.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_start_time_and_not_with_another() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert!(alive(me, Some(start)));
        assert!(!alive(me, Some(start + 1)));
        assert!(!alive(u32::MAX / 2, None));
    }

    #[test]
    fn exit_info_round_trips_as_json() {
        for e in [ExitInfo::Code(3), ExitInfo::Signal(9), ExitInfo::SpawnError("x".into())] {
            let s = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<ExitInfo>(&s).unwrap(), e);
        }
        assert_eq!(ExitInfo::Signal(9).describe(), "killed by signal 9 (SIGKILL)");
    }
}
