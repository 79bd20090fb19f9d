//! `process.jsonl`, the record of a trial's process in its trial dir, and the claim that
//! makes "started" and "never started" exclusive.
//!
//! The file is *created* exactly once, exclusively: either by the trial's own process
//! right before it execs (`O_CREAT | O_EXCL`, empty; the shepherd then appends the pid and
//! start time), or by a resume that decides the trial never started (written under a
//! temporary name and hard-linked into place, so it appears whole; after that no process
//! of the trial can start). Later lines are appended: the exit status, written by the
//! shepherd that reaped the process. Every line carries the token of the trial it belongs
//! to (store identity and trial index), and readers skip lines of another token.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ExitInfo, RunInfo, PROCESS_FILE};

/// A line of `process.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProcessRecord {
    Started {
        pid: u32,
        start: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Ended {
        exit: ExitInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Written by a resume that found no process: the trial never started, and never will.
    Claimed {
        never_started: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

impl ProcessRecord {
    fn token(&self) -> Option<&str> {
        match self {
            ProcessRecord::Started { token, .. }
            | ProcessRecord::Ended { token, .. }
            | ProcessRecord::Claimed { token, .. } => token.as_deref(),
        }
    }
}

/// What `process.jsonl` says about one trial.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessState {
    pub run: Option<RunInfo>,
    pub exit: Option<ExitInfo>,
    /// A resume claimed the trial as never started.
    pub claimed: bool,
    /// The file exists (whatever it holds).
    pub exists: bool,
}

/// Read `process.jsonl` of the trial with `token`. Lines of another token are skipped
/// (lines without one, written by optx before tokens, are read); a line cut short by a
/// crash is skipped.
pub fn read_process(dir: &Path, token: &str) -> ProcessState {
    let Ok(text) = std::fs::read_to_string(dir.join(PROCESS_FILE)) else { return ProcessState::default() };
    let mut st = ProcessState { exists: true, ..Default::default() };
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<ProcessRecord>(line) else { continue };
        if r.token().is_some_and(|t| t != token) {
            continue;
        }
        match r {
            ProcessRecord::Started { pid, start, .. } => st.run = Some(RunInfo { pid, start }),
            ProcessRecord::Ended { exit, .. } => st.exit = Some(exit),
            ProcessRecord::Claimed { .. } => st.claimed = true,
        }
    }
    st
}

pub fn read_exit(dir: &Path, token: &str) -> Option<ExitInfo> {
    read_process(dir, token).exit
}

pub fn read_run_info(dir: &Path, token: &str) -> Option<RunInfo> {
    read_process(dir, token).run
}

/// One record as the line written to the file.
pub fn line(record: &ProcessRecord) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Append a record to an existing `process.jsonl` through the trial dir's descriptor (so
/// that it lands in the dir the trial ran in, even if that dir was renamed since).
pub fn append_at(dir: &std::os::fd::OwnedFd, record: &ProcessRecord) -> std::io::Result<()> {
    use rustix::fs::{openat, Mode, OFlags};
    let fd = openat(dir, PROCESS_FILE, OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC, Mode::empty())?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&line(record))
}

/// How a claim of a trial dir ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This process created `process.jsonl`: nobody else ever will.
    Won,
    /// It existed already.
    Taken,
}

/// Create `process.jsonl` in `dir` holding `record`, atomically: the file appears whole or
/// not at all, and only if it did not exist.
pub fn claim(dir: &Path, record: &ProcessRecord) -> std::io::Result<Claim> {
    let tmp = dir.join(format!(".{PROCESS_FILE}.{}.claim", std::process::id()));
    std::fs::write(&tmp, line(record))?;
    let linked = std::fs::hard_link(&tmp, dir.join(PROCESS_FILE));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Claim::Won),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Claim::Taken),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_another_trial_are_skipped_and_a_torn_line_too() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_process(d.path(), "s:1"), ProcessState::default());
        let started = ProcessRecord::Started { pid: 42, start: Some(7), token: Some("s:1".into()) };
        assert_eq!(claim(d.path(), &started).unwrap(), Claim::Won);
        let st = read_process(d.path(), "s:1");
        assert_eq!(st.run, Some(RunInfo { pid: 42, start: Some(7) }));
        assert!(st.exists && st.exit.is_none());
        // Another store's shepherd appending by path: not this trial's end.
        let fd: std::os::fd::OwnedFd = std::fs::File::open(d.path()).unwrap().into();
        append_at(&fd, &ProcessRecord::Ended { exit: ExitInfo::Code(3), token: Some("other:1".into()) }).unwrap();
        assert_eq!(read_process(d.path(), "s:1").exit, None);
        append_at(&fd, &ProcessRecord::Ended { exit: ExitInfo::Signal(9), token: Some("s:1".into()) }).unwrap();
        assert_eq!(read_exit(d.path(), "s:1"), Some(ExitInfo::Signal(9)));
        // A shepherd killed in the middle of its last write leaves a torn line.
        let mut f = std::fs::OpenOptions::new().append(true).open(d.path().join(PROCESS_FILE)).unwrap();
        f.write_all(b"{\"exit\":{\"co").unwrap();
        assert_eq!(read_exit(d.path(), "s:1"), Some(ExitInfo::Signal(9)));
    }

    #[test]
    fn a_claim_is_won_once_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let never = ProcessRecord::Claimed { never_started: "resume".into(), token: Some("s:0".into()) };
        assert_eq!(claim(d.path(), &never).unwrap(), Claim::Won);
        let started = ProcessRecord::Started { pid: 1, start: None, token: Some("s:0".into()) };
        assert_eq!(claim(d.path(), &started).unwrap(), Claim::Taken);
        let st = read_process(d.path(), "s:0");
        assert!(st.claimed && st.run.is_none());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn records_written_before_tokens_still_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(PROCESS_FILE), "{\"pid\":5,\"start\":9}\n{\"exit\":{\"code\":0}}\n").unwrap();
        let st = read_process(d.path(), "s:0");
        assert_eq!(st.run, Some(RunInfo { pid: 5, start: Some(9) }));
        assert_eq!(st.exit, Some(ExitInfo::Code(0)));
    }
}
