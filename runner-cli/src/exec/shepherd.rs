//! The shepherd process: reads spawn requests (JSON lines) on stdin, answers on stdout.
//!
//! Answers: `{"trial":N,"spawned":{"pid":P,"start":S}}`, `{"trial":N,"exited":EXIT}`.
//! On end of input it stops taking requests and exits once every trial it started has
//! ended, so trials live on (and get their exit status recorded) when optx dies.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{process_start_time, write_atomic, ExitInfo, RunInfo, SpawnRequest};
use super::{EXIT_FILE, RUN_FILE, STDERR_FILE, STDOUT_FILE};

#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum Answer {
    Spawned(RunInfo),
    Exited(ExitInfo),
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(super) struct Reply {
    pub trial: u64,
    #[serde(flatten)]
    pub answer: Answer,
}

fn send(out: &Mutex<std::io::Stdout>, trial: u64, answer: Answer) {
    let mut line = serde_json::to_vec(&Reply { trial, answer }).unwrap_or_default();
    line.push(b'\n');
    // optx may be gone: the trial's files still tell what happened.
    if let Ok(mut o) = out.lock() {
        let _ = o.write_all(&line).and_then(|_| o.flush());
    }
}

fn record_exit(req: &SpawnRequest, exit: &ExitInfo) {
    let bytes = serde_json::to_vec(exit).unwrap_or_default();
    if let Err(e) = write_atomic(&req.dir.join(EXIT_FILE), &bytes) {
        eprintln!("optx shepherd: cannot record the exit of trial {}: {e}", req.trial);
    }
}

fn spawn(req: &SpawnRequest) -> std::io::Result<std::process::Child> {
    let stdout = File::create(req.dir.join(STDOUT_FILE))?;
    let stderr = File::create(req.dir.join(STDERR_FILE))?;
    let (prog, args) = req.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    Command::new(prog)
        .args(args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&req.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
}

/// Run the shepherd until its input ends and its trials have ended. Returns the exit code.
pub fn serve() -> i32 {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut waiters: Vec<std::thread::JoinHandle<()>> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let req: SpawnRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("optx shepherd: bad request: {e}");
                continue;
            }
        };
        match spawn(&req) {
            Err(e) => {
                let exit = ExitInfo::SpawnError(format!("`{}`: {e}", req.argv.first().map_or("", |s| s.as_str())));
                record_exit(&req, &exit);
                send(&out, req.trial, Answer::Exited(exit));
            }
            Ok(mut child) => {
                let pid = child.id();
                let info = RunInfo { pid, start: process_start_time(pid) };
                if let Err(e) = write_atomic(&req.dir.join(RUN_FILE), &serde_json::to_vec(&info).unwrap_or_default()) {
                    eprintln!("optx shepherd: cannot record the pid of trial {}: {e}", req.trial);
                }
                send(&out, req.trial, Answer::Spawned(info));
                let out = Arc::clone(&out);
                let waiter = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                    let exit = match child.wait() {
                        Ok(st) => match (st.code(), st.signal()) {
                            (Some(c), _) => ExitInfo::Code(c),
                            (None, Some(s)) => ExitInfo::Signal(s),
                            _ => ExitInfo::Code(-1),
                        },
                        Err(e) => ExitInfo::SpawnError(format!("wait failed: {e}")),
                    };
                    // What the trial left running in its group ends with it.
                    super::kill_group(pid, true);
                    record_exit(&req, &exit);
                    send(&out, req.trial, Answer::Exited(exit));
                });
                match waiter {
                    Ok(h) => waiters.push(h),
                    Err(e) => eprintln!("optx shepherd: cannot start a waiter thread: {e}"),
                }
            }
        }
        waiters.retain(|h| !h.is_finished());
    }
    for h in waiters {
        let _ = h.join();
    }
    0
}
