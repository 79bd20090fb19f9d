//! optx's side of the shepherd: start it, send spawn requests, route its answers to the
//! thread that waits for each trial.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
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

pub struct Shepherd {
    pid: u32,
    /// Its answers ended: it died (or was closed).
    gone: Arc<AtomicBool>,
    stdin: Mutex<Option<ChildStdin>>,
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
        Ok(Shepherd {
            pid: child.id(),
            gone,
            stdin: Mutex::new(child.stdin.take()),
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
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let ok = stdin.as_mut().is_some_and(|s| s.write_all(&line).and_then(|_| s.flush()).is_ok());
        if !ok {
            self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.trial);
            let _ = tx.send(ProcEvent::ShepherdGone);
        }
        rx
    }

    /// Stop sending requests; wait for the shepherd (it ends once its trials have ended).
    pub fn close(&self) {
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.wait();
        }
        if let Some(h) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}
