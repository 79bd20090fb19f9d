//! The shepherd process: reads spawn requests (JSON lines) on stdin, answers on stdout.
//!
//! Answers: `{"trial":N,"exited":EXIT}` when a trial ends (or could not start). That a
//! trial started is recorded in its `process.jsonl`, created by the trial's own process
//! before it execs (see [`super::spawn`]), not sent: one message per trial.
//!
//! A request is carried out only while the optx that sent it is alive (the shepherd's
//! parent): after optx died, a request still waiting in the pipe is stale, and a resume
//! decides what became of its trial. On end of input the shepherd stops taking requests
//! and exits once every trial it started has ended, so trials live on (and get their exit
//! status recorded) when optx dies.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

use super::record::{append_at, ProcessRecord};
use super::{ExitInfo, SpawnRequest};
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

type Out = Mutex<std::io::Stdout>;

fn send(out: &Out, trial: u64, answer: Answer) {
    let mut line = serde_json::to_vec(&Reply { trial, answer }).unwrap_or_default();
    line.push(b'\n');
    // optx may be gone: the trial's files still tell what happened.
    if let Ok(mut o) = out.lock() {
        let _ = o.write_all(&line).and_then(|_| o.flush());
    }
}

/// A trial that started: its request and its trial dir, open.
struct Live {
    req: SpawnRequest,
    dir: OwnedFd,
}

/// A trial ended (what it left in its group is killed already): record how it ended in
/// its trial dir (through the descriptor, so a renamed dir still gets it), then tell optx.
fn ended(out: &Out, live: &Live, exit: ExitInfo) {
    let record = ProcessRecord::Ended { exit: exit.clone(), token: Some(live.req.token.clone()) };
    if let Err(e) = append_at(&live.dir, &record) {
        eprintln!("optx shepherd: cannot record the exit of trial {}: {e}", live.req.trial);
    }
    send(out, live.req.trial, Answer::Exited(exit));
}

/// The trial's stdout and stderr files, created in its dir.
fn output(dir: &OwnedFd, name: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{openat, Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
    Ok(std::fs::File::from(openat(dir, name, flags, Mode::from_raw_mode(0o644))?))
}

/// Children started and not reaped yet.
#[derive(Default)]
struct Children {
    by_pid: HashMap<u32, Live>,
    /// A spawn is under way: a child that is not registered yet may be its.
    spawning: bool,
    /// No more requests will come.
    closed: bool,
}

type Shared = Arc<(Mutex<Children>, Condvar)>;

/// The pid of a child that has ended, left unreaped (`WNOWAIT`), so that only the thread
/// that owns the child reaps it: this thread for registered trials, the spawning one
/// (`posix_spawn` waits for a child whose exec failed) otherwise.
fn next_ended_child() -> std::io::Result<u32> {
    // SAFETY: `siginfo_t` is plain data, for which all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable `siginfo_t`; waitid with P_ALL ignores the id.
    let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded with WEXITED, so `info` describes a child and si_pid is set.
    Ok(unsafe { info.si_pid() } as u32)
}

fn exit_info(status: rustix::process::WaitStatus) -> ExitInfo {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => ExitInfo::Code(c),
        (None, Some(s)) => ExitInfo::Signal(s),
        _ => ExitInfo::Code(-1),
    }
}

/// One thread reaps every trial, so a trial costs no thread.
fn reap(shared: Shared, out: Arc<Out>) {
    let (lock, cvar) = &*shared;
    loop {
        {
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            while c.by_pid.is_empty() && !c.spawning {
                if c.closed {
                    return;
                }
                c = cvar.wait(c).unwrap_or_else(|e| e.into_inner());
            }
        }
        let pid = match next_ended_child() {
            Ok(pid) => pid,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                // The only child is being spawned: wait for it to be registered.
                let c = lock.lock().unwrap_or_else(|e| e.into_inner());
                let _ = cvar.wait_timeout(c, std::time::Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                eprintln!("optx shepherd: wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let live = {
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            // A child of a spawn under way: the spawning thread registers it or reaps it.
            while !c.by_pid.contains_key(&pid) && c.spawning {
                c = cvar.wait(c).unwrap_or_else(|e| e.into_inner());
            }
            c.by_pid.remove(&pid)
        };
        let Some(rpid) = rustix::process::Pid::from_raw(pid as i32) else { continue };
        // What the trial left in its group is killed while its leader, a zombie not reaped
        // yet, still holds the group's id: no other process can have it.
        if live.is_some() {
            super::kill_group(pid, true);
        }
        let status = match rustix::process::waitpid(Some(rpid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => status,
            // Reaped by the spawning thread (a failed exec) in the meantime.
            _ => continue,
        };
        let Some(live) = live else { continue };
        ended(&out, &live, exit_info(status));
    }
}

/// Start the trial of `req`: the trial dir is opened first, then the parent is checked,
/// then the child claims `process.jsonl` and execs (see [`super::spawn`]); its pid and
/// start time are appended to the record once it runs.
fn spawn(req: &SpawnRequest, parent: Option<u32>, base_env: &[(OsString, OsString)]) -> Result<(u32, OwnedFd), String> {
    use rustix::fs::{open, Mode, OFlags};
    let program = req.argv.first().map_or("", |s| s.as_str());
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("`{program}`: {what}: {e}");
    let dir = open(&req.dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| fail("cannot open the trial dir", &e))?;
    // After the dir is open: if optx is still alive now, no resume has touched the dir yet.
    if parent.is_some_and(|p| rustix::process::getppid().map(|x| x.as_raw_nonzero().get() as u32) != Some(p)) {
        return Err("the optx that asked for this trial is gone: not starting it".into());
    }
    let stdout = output(&dir, STDOUT_FILE).map_err(|e| fail("cannot create stdout.log", &e))?;
    let stderr = output(&dir, STDERR_FILE).map_err(|e| fail("cannot create stderr.log", &e))?;
    let path_var = req.env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| std::ffi::OsStr::new(v.as_str()));
    let exe = match &req.program {
        Some(p) => Some(p.clone()),
        None => super::spawn::resolve(std::path::Path::new(program), path_var),
    };
    let Some(exe) = exe else {
        return Err(format!("`{program}`: could not start: No such file or directory (not found on PATH)"));
    };
    let spawned = super::spawn::spawn(&super::spawn::Spawn {
        program: &exe,
        argv: &req.argv,
        base_env,
        env: &req.env,
        cwd: &req.cwd,
        stdout: stdout.as_fd(),
        stderr: stderr.as_fd(),
        dir: dir.as_fd(),
        claim: super::PROCESS_FILE,
    });
    match spawned {
        Ok(pid) => {
            let record =
                ProcessRecord::Started { pid, start: super::process_start_time(pid), token: Some(req.token.clone()) };
            if let Err(e) = append_at(&dir, &record) {
                eprintln!("optx shepherd: cannot record the pid of trial {}: {e}", req.trial);
            }
            Ok((pid, dir))
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // Not ours to write in: a resume claimed the trial as never started.
            Err(format!("trial {} was claimed as never started (by a resume): not starting it", req.trial))
        }
        Err(e) => {
            let why = fail("could not start", &e);
            // The child claimed the record before its exec failed: say how it ended.
            let record =
                ProcessRecord::Ended { exit: ExitInfo::SpawnError(why.clone()), token: Some(req.token.clone()) };
            let _ = append_at(&dir, &record);
            Err(why)
        }
    }
}

/// Run the shepherd for the optx `parent` until its input ends and its trials have ended.
/// Returns the exit code.
pub fn serve(parent: Option<u32>) -> i32 {
    // A shepherd stopped when optx dies gets SIGHUP (its process group is orphaned): it
    // must live on to record how its trials end. A handler (not SIG_IGN) is reset by exec,
    // so trials get the default again.
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::default()) {
        eprintln!("optx shepherd: cannot keep SIGHUP away: {e}");
    }
    let out: Arc<Out> = Arc::new(Mutex::new(std::io::stdout()));
    let shared: Shared = Arc::default();
    let base_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
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
        lock.lock().unwrap_or_else(|e| e.into_inner()).spawning = true;
        let spawned = spawn(&req, parent, &base_env);
        let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
        c.spawning = false;
        match spawned {
            Ok((pid, dir)) => {
                c.by_pid.insert(pid, Live { req, dir });
                cvar.notify_all();
            }
            Err(why) => {
                cvar.notify_all();
                drop(c);
                eprintln!("optx shepherd: trial {}: {why}", req.trial);
                send(&out, req.trial, Answer::Exited(ExitInfo::SpawnError(why)));
            }
        }
    }
    let (lock, cvar) = &*shared;
    lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    cvar.notify_all();
    let _ = reaper.join();
    0
}
