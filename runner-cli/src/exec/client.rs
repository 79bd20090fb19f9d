//! optx's side of the shepherd: start it, send spawn requests, route its answers to the
//! thread that waits for each trial.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::shepherd::{Answer, Reply};
use super::{ExitInfo, SpawnRequest};

/// What happens to a process the shepherd runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcEvent {
    Exited(ExitInfo),
    /// The shepherd itself died: watch the process through its files instead.
    ShepherdGone,
}

type Routes = Arc<Mutex<HashMap<u64, Sender<ProcEvent>>>>;

/// A spawn request for the writer thread: the trial and its JSON line.
type Request = (u64, Vec<u8>);

/// The shepherd's stdin, non-blocking; whoever writes a line holds its lock for the line.
type Stdin = Arc<Mutex<ChildStdin>>;

pub struct Shepherd {
    pid: u32,
    /// Its answers ended: it died (or was closed).
    gone: Arc<AtomicBool>,
    /// A request is written at once when the pipe has room for all of it; otherwise it goes
    /// to a writer thread: a shepherd that is stopped (its pipe full) must not block the
    /// workers that ask.
    stdin: Mutex<Option<Stdin>>,
    requests: Mutex<Option<Sender<Request>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    routes: Routes,
    child: Mutex<Option<Child>>,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shepherd {
    /// Start `exe __shepherd` in a process group of its own (so a Ctrl-C meant for optx
    /// does not reach it).
    pub fn start(exe: &std::path::Path) -> std::io::Result<Shepherd> {
        let mut child = Command::new(exe)
            .arg("__shepherd")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no shepherd stdout"))?;
        let routes: Routes = Arc::default();
        let r = Arc::clone(&routes);
        let gone = Arc::new(AtomicBool::new(false));
        let g = Arc::clone(&gone);
        let reader = std::thread::Builder::new().name("optx-shepherd-reader".into()).spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(reply) = serde_json::from_str::<Reply>(&line) else { continue };
                let mut routes = r.lock().unwrap_or_else(|e| e.into_inner());
                let Answer::Exited(exit) = reply.answer;
                if let Some(tx) = routes.remove(&reply.trial) {
                    let _ = tx.send(ProcEvent::Exited(exit));
                }
            }
            let mut routes = r.lock().unwrap_or_else(|e| e.into_inner());
            g.store(true, Ordering::SeqCst);
            for (_, tx) in routes.drain() {
                let _ = tx.send(ProcEvent::ShepherdGone);
            }
        })?;
        let stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no shepherd stdin"))?;
        let flags = rustix::fs::fcntl_getfl(&stdin)?;
        rustix::fs::fcntl_setfl(&stdin, flags | rustix::fs::OFlags::NONBLOCK)?;
        let stdin: Stdin = Arc::new(Mutex::new(stdin));
        let (requests, queue) = unbounded::<Request>();
        let (w, s) = (Arc::clone(&routes), Arc::clone(&stdin));
        let writer = std::thread::Builder::new()
            .name("optx-shepherd-writer".into())
            .spawn(move || write_requests(s, queue, w))?;
        Ok(Shepherd {
            pid: child.id(),
            gone,
            stdin: Mutex::new(Some(stdin)),
            requests: Mutex::new(Some(requests)),
            writer: Mutex::new(Some(writer)),
            routes,
            child: Mutex::new(Some(child)),
            reader: Mutex::new(Some(reader)),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the shepherd died (or was closed): a new one must run the next trials.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Ask the shepherd to run `req`; its events arrive on the returned channel.
    pub fn spawn(&self, req: &SpawnRequest) -> Receiver<ProcEvent> {
        let (tx, rx) = unbounded();
        {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_gone() {
                let _ = tx.send(ProcEvent::ShepherdGone);
                return rx;
            }
            routes.insert(req.trial, tx.clone());
        }
        let mut line = serde_json::to_vec(req).unwrap_or_default();
        line.push(b'\n');
        match self.write_now(&line) {
            Some(true) => return rx,
            Some(false) => {
                self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.trial);
                let _ = tx.send(ProcEvent::ShepherdGone);
                return rx;
            }
            None => {}
        }
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|r| r.send((req.trial, line)).is_ok());
        if !sent {
            self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.trial);
            let _ = tx.send(ProcEvent::ShepherdGone);
        }
        rx
    }

    /// Write `line` now if nobody else is writing and the pipe has room for all of it: a
    /// write of at most `PIPE_BUF` bytes to a non-blocking pipe writes all or nothing.
    /// `Some(true)`: written; `Some(false)`: the shepherd is gone; `None`: queue it.
    fn write_now(&self, line: &[u8]) -> Option<bool> {
        if line.len() > libc::PIPE_BUF {
            return None;
        }
        let stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let stdin = stdin.try_lock().ok()?;
        match rustix::io::write(&*stdin, line) {
            Ok(n) if n == line.len() => Some(true),
            Ok(_) => None, // not for a pipe; the writer thread would send a half line's rest
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => None,
            Err(_) => Some(false),
        }
    }

    /// Stop sending requests; wait for the shepherd (it ends once its trials have ended).
    pub fn close(&self) {
        // The writer ends (closing the shepherd's stdin, whose last holder it is then) once
        // its queue is written. It is not joined: a shepherd that is stopped would keep it
        // (and this) waiting.
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        drop(self.requests.lock().unwrap_or_else(|e| e.into_inner()).take());
        drop(self.writer.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.wait();
        }
        if let Some(h) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// Write each request to the shepherd's stdin, waiting for room in the pipe; when a write
/// fails (it died), tell the trial that asked. Ends when no more requests will come (the
/// pipe closes once the shepherd is dropped, too).
fn write_requests(stdin: Stdin, queue: Receiver<Request>, routes: Routes) {
    for (trial, line) in queue {
        let stdin = stdin.lock().unwrap_or_else(|e| e.into_inner());
        if write_all_waiting(&stdin, &line).is_err() {
            if let Some(tx) = routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&trial) {
                let _ = tx.send(ProcEvent::ShepherdGone);
            }
        }
    }
}

/// Write all of `line` to the non-blocking `fd`, waiting for room whenever the pipe is full.
fn write_all_waiting(fd: &ChildStdin, mut line: &[u8]) -> rustix::io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    while !line.is_empty() {
        match rustix::io::write(fd, line) {
            Ok(n) => line = &line[n..],
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::OUT)];
                match poll(&mut fds, None) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
