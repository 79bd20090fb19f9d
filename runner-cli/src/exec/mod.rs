//! L1: operating-system processes.
//!
//! Trials run under a *shepherd*: a small helper process (`optx __shepherd`, started once
//! per run in its own process group) that spawns each trial in a process group of its own
//! with stdin from /dev/null and stdout/stderr going straight to files in the trial dir,
//! reaps it, kills whatever the trial left in its group, and records the process in
//! `process.jsonl` in the trial dir (see [`record`]): the file is created by the trial's
//! own process right before it execs, so that a trial is always recorded as started before
//! it can run; then a line with its pid and start time, and one with its exit status when
//! it ends. Trials
//! therefore outlive optx (a kill -9 of optx leaves them running and their exit status is
//! still recorded), and a restarted optx, which is not their parent, can read how they
//! ended. One shepherd per run rather than a supervisor per trial keeps process creation
//! to one spawn per trial.
//!
//! Uses only `domain` (nothing of it, in fact): the runners above decide what to run.

mod client;
mod record;
mod shepherd;
mod spawn;

pub use client::{ProcEvent, Shepherd};
pub use record::{claim, read_exit, read_process, read_run_info, Claim, ProcessRecord, ProcessState};
pub use shepherd::serve as serve_shepherd;

use serde::{Deserialize, Serialize};

/// What the shepherd is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub trial: u64,
    /// The trial's identity in its records: the store's id and the trial index.
    pub token: String,
    /// The program's path when it was resolved once for the whole run (argv[0] stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<std::path::PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    /// The trial dir: `stdout.log`, `stderr.log` and `process.jsonl` go here.
    pub dir: std::path::PathBuf,
}

/// The token of trial `index` of the store `store_id`, as its records carry it.
pub fn token(store_id: &str, index: u64) -> String {
    format!("{store_id}:{index}")
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

/// The process a trial runs as, recorded in `process.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`), to tell a reused pid apart.
    pub start: Option<u64>,
}

/// Where the shepherd records a trial's process: `{"pid":P,"start":S}` then `{"exit":E}`.
pub const PROCESS_FILE: &str = "process.jsonl";
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

/// The parent of the process `pid` that started at `start`, if it is a zombie (it ended
/// and its parent has not reaped it yet).
pub fn zombie_parent(pid: u32, start: Option<u64>) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    let started: Option<u64> = fields.get(19)?.parse().ok();
    if fields.first() != Some(&"Z") || start.is_some_and(|want| started != Some(want)) {
        return None;
    }
    fields.get(1)?.parse().ok()
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

/// The environment variable that marks every process of a trial with its token.
pub const TOKEN_VAR: &str = "OPTX_TRIAL_TOKEN";

/// The trial's own process (the leader of its process group) found by what it carries:
/// its stdout is `output` (the trial's stdout.log), or its environment holds the trial's
/// token. For a record cut short (the shepherd died before writing the pid). Scans /proc.
pub fn find_trial_process(output: &std::path::Path, token: &str) -> Option<RunInfo> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(output).ok().map(|m| (m.dev(), m.ino()));
    let marker = format!("{TOKEN_VAR}={token}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let leader = fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pid);
        if !leader || fields.first() == Some(&"Z") {
            continue;
        }
        let by_output =
            want.is_some_and(|w| std::fs::metadata(format!("/proc/{pid}/fd/1")).is_ok_and(|m| (m.dev(), m.ino()) == w));
        let by_env = || {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        };
        if by_output || by_env() {
            return Some(RunInfo { pid, start: process_start_time(pid) });
        }
    }
    None
}

/// The file `PATH` would run for `program` (a name without `/`), looked up once.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') || program.is_empty() {
        return None;
    }
    spawn::resolve(std::path::Path::new(program), None)
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
    fn which_finds_programs_on_path_and_leaves_paths_alone() {
        assert!(which("sh").is_some_and(|p| p.ends_with("sh") && p.is_absolute()));
        assert_eq!(which("no-such-program-for-optx"), None);
        assert_eq!(which("./sh"), None);
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
