//! Plugin calls under `call_timeout`, in one place, two ways:
//! - [`guarded`]: on a call thread, waited for at most the timeout. The driver's calls go
//!   this way (a round of polls, the learning curves, stops), so that the loop that follows
//!   every trial never blocks past the timeout; a call that overruns leaves its thread behind
//!   (a thread cannot be killed) and the next call starts a new one.
//! - [`watched`]: on the calling worker itself, under the watchdog. The calls about given
//!   trials on the scheduler's workers go this way (deploying, reading results: most take
//!   microseconds, a hand-off would cost more). When one overruns, the watchdog ends its
//!   trials as FAILED and counts the worker as stuck; the scheduler starts a new worker in
//!   its place, and the answer of the call, should it return after all, is dropped.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use optx_plugin_api::host::CallError;

use crate::runners::{RunnerEvent, TrialResult};

type CallJob = Box<dyn FnOnce() + Send>;

thread_local! {
    /// This thread's call thread.
    static CALL_THREAD: RefCell<Option<Sender<CallJob>>> = const { RefCell::new(None) };
}

fn spawn_call_thread() -> Option<Sender<CallJob>> {
    let (tx, rx) = unbounded::<CallJob>();
    std::thread::Builder::new()
        .name("optx-plugin-call".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

pub(super) fn overran(what: &str, timeout: Duration) -> String {
    format!("the plugin's {what} did not return within call_timeout ({}); its thread is left behind", secs(timeout))
}

/// A call on this thread's call thread, waited for at most `timeout`. A call that overruns
/// becomes an error, and its thread is abandoned (the next call starts a new one).
pub(super) fn guarded<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> Result<T, CallError> + Send + 'static,
) -> Result<T, CallError> {
    let (rtx, rrx) = crossbeam_channel::bounded(1);
    let mut job: CallJob = Box::new(move || {
        let _ = rtx.send(f());
    });
    let sent = CALL_THREAD.with(|c| {
        let mut c = c.borrow_mut();
        for _ in 0..2 {
            if c.is_none() {
                *c = spawn_call_thread();
            }
            let Some(tx) = c.as_ref() else { return Err(job) };
            match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    job = e.into_inner();
                    *c = None;
                }
            }
        }
        Err(job)
    });
    if let Err(job) = sent {
        // No thread can be started: call in place, without a timeout.
        job();
    }
    match rrx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(e) => {
            CALL_THREAD.with(|c| *c.borrow_mut() = None);
            Err(CallError::Protocol(match e {
                RecvTimeoutError::Timeout => overran(what, timeout),
                RecvTimeoutError::Disconnected => format!("the plugin's {what} ended abnormally"),
            }))
        }
    }
}

pub(super) fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Calls in progress on the workers, watched for their `call_timeout`.
struct Watchdog {
    calls: Mutex<Calls>,
    /// A new call is announced to a watchdog that waits for nothing (no call was running).
    /// One that waits wakes by itself by the earliest deadline, which is never later than a
    /// new call's (one timeout for all calls of a run).
    wake: Sender<()>,
    stuck: AtomicUsize,
}

#[derive(Default)]
struct Calls {
    next: u64,
    running: BTreeMap<u64, Watched>,
    idle: bool,
}

struct Watched {
    deadline: Instant,
    message: String,
    trials: Vec<u64>,
    events: Sender<RunnerEvent>,
    timed_out: bool,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let (wake, woken) = unbounded();
        // Without a watchdog thread, calls run unwatched (as if their timeout were endless).
        let _ = std::thread::Builder::new().name("optx-plugin-watchdog".into()).spawn(move || watch(&woken));
        Watchdog { calls: Mutex::default(), wake, stuck: AtomicUsize::new(0) }
    })
}

/// Run `f` about `trials` on this thread under `timeout`. `None`: it overran, and its
/// trials were already ended through `events`; the caller says nothing more about them.
pub(super) fn watched<T>(
    timeout: Duration,
    what: &str,
    trials: &[u64],
    events: &Sender<RunnerEvent>,
    f: impl FnOnce() -> Result<T, CallError>,
) -> Option<Result<T, CallError>> {
    let w = watchdog();
    let id = {
        let mut c = w.calls.lock().unwrap_or_else(|e| e.into_inner());
        let id = c.next;
        c.next += 1;
        let (deadline, message) = (Instant::now() + timeout, overran(what, timeout));
        c.running.insert(
            id,
            Watched { deadline, message, trials: trials.to_vec(), events: events.clone(), timed_out: false },
        );
        if std::mem::take(&mut c.idle) {
            let _ = w.wake.send(());
        }
        id
    };
    let r = f();
    let done = w.calls.lock().unwrap_or_else(|e| e.into_inner()).running.remove(&id);
    if done.is_some_and(|d| d.timed_out) {
        w.stuck.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(r)
}

/// Workers blocked in a call past its timeout right now.
pub(super) fn stuck() -> usize {
    watchdog().stuck.load(Ordering::SeqCst)
}

fn watch(woken: &Receiver<()>) {
    loop {
        let next = {
            let w = watchdog();
            let mut c = w.calls.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for call in c.running.values_mut().filter(|c| !c.timed_out && c.deadline <= now) {
                call.timed_out = true;
                w.stuck.fetch_add(1, Ordering::SeqCst);
                for &index in &call.trials {
                    let result = TrialResult::failed(call.message.clone(), false);
                    let _ = call.events.send(RunnerEvent::Finished { index, result });
                }
            }
            let next = c.running.values().filter(|c| !c.timed_out).map(|c| c.deadline).min();
            c.idle = next.is_none();
            next
        };
        let r = match next {
            Some(d) => woken.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => woken.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        if r == Err(RecvTimeoutError::Disconnected) {
            return;
        }
        // Announcements that came meanwhile are read at once.
        while woken.try_recv().is_ok() {}
    }
}
