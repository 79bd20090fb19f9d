//! The shepherd process: reads spawn requests (JSON lines) on stdin, answers on stdout.
//!
//! Answers: `{"trial":N,"exited":EXIT}` when a trial ends (or could not start). That a
//! trial started is recorded in its `process.jsonl`, not sent: one message per trial.
//! On end of input it stops taking requests and exits once every trial it started has
//! ended, so trials live on (and get their exit status recorded) when optx dies.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{process_start_time, record_process, ExitInfo, ProcessRecord, RunInfo, SpawnRequest};
use super::{STDERR_FILE, STDOUT_FILE};

#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum Answer {
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
    if let Err(e) = record_process(&req.dir, &ProcessRecord::Ended { exit: exit.clone() }) {
        eprintln!("optx shepherd: cannot record the exit of trial {}: {e}", req.trial);
    }
}

/// A trial ended (or could not start): kill what it left in its group, record how it
/// ended in its trial dir, then tell optx.
fn ended(out: &Mutex<std::io::Stdout>, req: &SpawnRequest, pid: Option<u32>, exit: ExitInfo) {
    if let Some(pid) = pid {
        super::kill_group(pid, true);
    }
    record_exit(req, &exit);
    send(out, req.trial, Answer::Exited(exit));
}

fn spawn(req: &SpawnRequest) -> std::io::Result<std::process::Child> {
    let stdout = File::create(req.dir.join(STDOUT_FILE))?;
    let stderr = File::create(req.dir.join(STDERR_FILE))?;
    let (prog, args) = req.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = match &req.program {
        Some(path) => {
            let mut c = Command::new(path);
            c.arg0(prog);
            c
        }
        None => Command::new(prog),
    };
    cmd.args(args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&req.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
}

/// Children started and not reaped yet.
#[derive(Default)]
struct Children {
    by_pid: std::collections::HashMap<u32, SpawnRequest>,
    /// Exits reaped before the spawning thread registered the child.
    early: std::collections::HashMap<u32, ExitInfo>,
    /// No more requests will come.
    closed: bool,
}

type Shared = Arc<(Mutex<Children>, std::sync::Condvar)>;

fn exit_info(status: rustix::process::WaitStatus) -> ExitInfo {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => ExitInfo::Code(c),
        (None, Some(s)) => ExitInfo::Signal(s),
        _ => ExitInfo::Code(-1),
    }
}

/// One thread reaps every trial (waitpid on any child), so a trial costs no thread.
fn reap(shared: Shared, out: Arc<Mutex<std::io::Stdout>>) {
    let (lock, cvar) = &*shared;
    loop {
        {
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            // Wait only while some registered child exists: a child that ends before its
            // registration stays a zombie until then, or is kept in `early`.
            while c.by_pid.is_empty() {
                if c.closed {
                    return;
                }
                c = cvar.wait(c).unwrap_or_else(|e| e.into_inner());
            }
        }
        let (pid, status) = match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) => (pid.as_raw_nonzero().get() as u32, status),
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::CHILD) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            Err(e) => {
                eprintln!("optx shepherd: wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if status.stopped() {
            continue;
        }
        let exit = exit_info(status);
        let req = {
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            let req = c.by_pid.remove(&pid);
            if req.is_none() {
                // Not registered yet: the spawning thread finishes it.
                c.early.insert(pid, exit.clone());
            }
            req
        };
        let Some(req) = req else { continue };
        // The group is killed right after its leader is reaped. Its pid could in theory be
        // reused in between, but Linux hands pids out in sequence up to pid_max (at least
        // 32768): a reuse within these microseconds would take a full wrap of the pids.
        ended(&out, &req, Some(pid), exit);
    }
}

/// Run the shepherd until its input ends and its trials have ended. Returns the exit code.
pub fn serve() -> i32 {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let shared: Shared = Arc::default();
    let reaper = {
        let (shared, out) = (Arc::clone(&shared), Arc::clone(&out));
        match std::thread::Builder::new().name("optx-reaper".into()).spawn(move || reap(shared, out)) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("optx shepherd: cannot start the reaper thread: {e}");
                return 1;
            }
        }
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let req: SpawnRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("optx shepherd: bad request: {e}");
                continue;
            }
        };
        let (lock, cvar) = &*shared;
        match spawn(&req) {
            Err(e) => {
                let exit = ExitInfo::SpawnError(format!("`{}`: {e}", req.argv.first().map_or("", |s| s.as_str())));
                ended(&out, &req, None, exit);
            }
            Ok(child) => {
                let pid = child.id();
                // The reaper waits for it; dropping `child` neither waits nor kills.
                drop(child);
                let info = RunInfo { pid, start: process_start_time(pid) };
                // Recorded before it is registered, so "started" always precedes "ended".
                if let Err(e) = record_process(&req.dir, &ProcessRecord::Started(info)) {
                    eprintln!("optx shepherd: cannot record the pid of trial {}: {e}", req.trial);
                }
                let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
                match c.early.remove(&pid) {
                    Some(exit) => {
                        drop(c);
                        ended(&out, &req, Some(pid), exit);
                    }
                    None => {
                        c.by_pid.insert(pid, req);
                        cvar.notify_one();
                    }
                }
            }
        }
    }
    let (lock, cvar) = &*shared;
    lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    cvar.notify_all();
    let _ = reaper.join();
    0
}
