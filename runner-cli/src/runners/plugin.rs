//! `[runner] kind = "plugin"` and `[metrics.X] plugin = ...`: runners and metrics in a cdylib
//! that implements the optx plugin ABI. The only module that sees the ABI.
//!
//! A library is loaded once per process and never unloaded. Every call into a plugin runs
//! on a call thread of the worker that makes it, so that a call that does not return
//! within `call_timeout` fails its trial while optx goes on; the stuck thread is left
//! behind (a thread cannot be killed), and the worker gets a fresh call thread.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{after, select, Receiver, Sender};
use optx_plugin_api::host::{CallError, MetricClient, Plugin, RunnerClient};
use optx_plugin_api::{Poll, Status, TrialContext, TrialRef};
use serde_json::Value;

use super::output::{read_result_files, MetricPoint};
use super::{Control, Outcome, PollSchedule, RunnerEvent, TrialJob, TrialResult, TrialRunner};
use crate::domain::{ExperimentSpec, KeepTrialDirs, MetricRule, PluginRef, RunnerSpec};

/// Libraries loaded so far, by path: each is loaded once and never unloaded.
fn loaded() -> &'static Mutex<BTreeMap<PathBuf, Plugin>> {
    static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, Plugin>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Load a plugin library and check its table (the ABI version first). Errors name the
/// place in the experiment file that names the library.
pub fn load(r: &PluginRef) -> Result<Plugin, String> {
    let mut cache = loaded().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(&r.library) {
        return Ok(p.clone());
    }
    let path = r.library.display();
    match std::fs::metadata(&r.library) {
        Err(_) => {
            return Err(format!(
                "{}: the plugin library {path} does not exist (build it first, e.g. `cargo build --workspace`)",
                r.origin
            ))
        }
        // Opening a FIFO or a device to load it would block, or worse.
        Ok(m) if !m.is_file() => {
            return Err(format!("{}: the plugin library {path} is not a regular file (a .so file)", r.origin))
        }
        Ok(_) => {}
    }
    // SAFETY: loading a library runs its initializers. A library named as an optx plugin is
    // code the user chose to run, like the command of a command runner.
    let lib = unsafe { libloading::Library::new(&r.library) }
        .map_err(|e| format!("{}: cannot load the plugin library {path}: {e}", r.origin))?;
    // SAFETY: `optx_plugin_v1` has the ABI's entry type in every optx plugin; the pointer is
    // copied out and used only while the library stays loaded (forever, below).
    let entry = unsafe { lib.get::<optx_plugin_api::abi::EntryFn>(optx_plugin_api::ENTRY_SYMBOL.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| {
            format!(
                "{}: {path} is not an optx plugin: it does not export `{}`",
                r.origin,
                optx_plugin_api::ENTRY_SYMBOL
            )
        })?;
    // SAFETY: the entry point of a loaded library that is never unloaded, so its table and
    // strings live as long as the process.
    let plugin = unsafe { Plugin::from_entry(entry) }.map_err(|e| format!("{}: {path} is refused: {e}", r.origin))?;
    // Never unloaded: threads left behind by a call timeout may still run its code.
    std::mem::forget(lib);
    cache.insert(r.library.clone(), plugin.clone());
    Ok(plugin)
}

/// Load the library of `r` and check that it offers `r.name` as a `kind`.
pub fn check(r: &PluginRef, kind: &str) -> Result<Plugin, String> {
    let p = load(r)?;
    let offered = if kind == "runner" { &p.runners } else { &p.metrics };
    if !offered.contains(&r.name) {
        let list = if offered.is_empty() { "none".to_string() } else { offered.join(", ") };
        return Err(format!(
            "{}: the plugin `{}` ({}) offers no {kind} `{}`; its {kind}s: {list}",
            r.origin,
            p.name,
            r.library.display(),
            r.name
        ));
    }
    Ok(p)
}

/// Every plugin library an experiment names, loaded and checked: one line per runner or
/// metric (what it is, the plugin's name, version and ABI), or every error.
pub fn check_all(spec: &ExperimentSpec) -> Result<Vec<String>, Vec<String>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut wanted = Vec::new();
    if let RunnerSpec::Plugin(p) = &spec.runner {
        wanted.push((format!("runner `{}`", p.plugin.name), &p.plugin, "runner"));
    }
    for (name, rule) in &spec.metrics {
        if let MetricRule::Plugin(r) = rule {
            wanted.push((format!("metric `{name}` = `{}`", r.name), r, "metric"));
        }
    }
    for (what, r, kind) in wanted {
        match check(r, kind) {
            Ok(p) => found.push(format!("{what}: {} {} (ABI {}.{})", p.name, p.version, p.abi.0, p.abi.1)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

type CallJob = Box<dyn FnOnce() + Send>;

thread_local! {
    /// This worker's call thread.
    static CALL_THREAD: RefCell<Option<Sender<CallJob>>> = const { RefCell::new(None) };
}

fn spawn_call_thread() -> Option<Sender<CallJob>> {
    let (tx, rx) = crossbeam_channel::unbounded::<CallJob>();
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

/// A call through the ABI on this worker's call thread, waited for at most `timeout`. A
/// call that overruns becomes an error, and its thread is abandoned (the next call starts
/// a new one).
fn call<T: Send + 'static>(
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
                crossbeam_channel::RecvTimeoutError::Timeout => format!(
                    "the plugin's {what} did not return within call_timeout ({}); its thread is left behind",
                    secs(timeout)
                ),
                crossbeam_channel::RecvTimeoutError::Disconnected => format!("the plugin's {what} ended abnormally"),
            }))
        }
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Plugin runner calls in progress, watched for their `call_timeout`. A runner's calls run
/// on the worker's own thread (no hand-off: most calls take microseconds); when one
/// overruns, the watchdog ends its trial as FAILED and counts the worker as stuck, and the
/// scheduler starts a new worker in its place. If the call returns after all, its answer
/// is dropped.
#[derive(Default)]
struct Watchdog {
    state: Mutex<WatchState>,
    wake: Condvar,
    stuck: AtomicUsize,
}

#[derive(Default)]
struct WatchState {
    next: u64,
    calls: BTreeMap<u64, Watched>,
    started: bool,
    /// The watchdog waits without a deadline (no call was running): wake it for a new call.
    idle: bool,
}

struct Watched {
    deadline: Instant,
    message: String,
    index: u64,
    events: Sender<RunnerEvent>,
    timed_out: bool,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(Watchdog::default)
}

impl Watchdog {
    /// Run `f` for trial `index` under `timeout`. `None`: it overran, and its trial was
    /// already ended through `events`; the caller sends nothing more about it.
    fn call<T>(
        &'static self,
        timeout: Duration,
        what: &str,
        index: u64,
        events: &Sender<RunnerEvent>,
        f: impl FnOnce() -> Result<T, CallError>,
    ) -> Option<Result<T, CallError>> {
        let id = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.started {
                st.started =
                    std::thread::Builder::new().name("optx-plugin-watchdog".into()).spawn(move || self.watch()).is_ok();
            }
            let id = st.next;
            st.next += 1;
            let message = format!(
                "the plugin's {what} did not return within call_timeout ({}); its thread is left behind",
                secs(timeout)
            );
            let deadline = Instant::now() + timeout;
            st.calls.insert(id, Watched { deadline, message, index, events: events.clone(), timed_out: false });
            // A running watchdog wakes by itself by the earliest deadline, which is never
            // later than this call's (one timeout for all calls).
            if st.idle {
                st.idle = false;
                self.wake.notify_one();
            }
            id
        };
        let r = f();
        let w = self.state.lock().unwrap_or_else(|e| e.into_inner()).calls.remove(&id);
        if w.is_some_and(|w| w.timed_out) {
            self.stuck.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(r)
    }

    fn watch(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match st.calls.values().filter(|c| !c.timed_out).map(|c| c.deadline).min() {
                None => {
                    st.idle = true;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                Some(d) if d > now => st = self.wake.wait_timeout(st, d - now).unwrap_or_else(|e| e.into_inner()).0,
                Some(_) => {
                    for c in st.calls.values_mut().filter(|c| !c.timed_out && c.deadline <= now) {
                        c.timed_out = true;
                        self.stuck.fetch_add(1, Ordering::SeqCst);
                        let result = failed(c.message.clone(), false);
                        let _ = c.events.send(RunnerEvent::Finished { index: c.index, result });
                    }
                }
            }
        }
    }
}

/// The `[metrics.X] plugin = ...` metrics of an experiment, opened.
#[derive(Clone, Default)]
pub struct PluginMetrics {
    metrics: Vec<(String, MetricClient)>,
    call_timeout: Duration,
}

/// How often a fetch that says "retry" is asked again, and how long to wait first.
const FETCH_ATTEMPTS: u32 = 5;
const FETCH_FIRST_WAIT: Duration = Duration::from_millis(100);

impl PluginMetrics {
    /// Load and open every plugin metric of `spec`.
    pub fn open(spec: &ExperimentSpec) -> Result<Self, String> {
        let call_timeout = match &spec.runner {
            RunnerSpec::Plugin(p) => p.call_timeout,
            _ => Duration::from_secs(30),
        };
        let mut metrics = Vec::new();
        for (name, rule) in &spec.metrics {
            if let MetricRule::Plugin(r) = rule {
                let p = check(r, "metric")?;
                let m = p.open_metric(&r.name, &r.config, &spec.name).map_err(|e| {
                    format!("{}: the plugin `{}` refused to open metric `{}`: {e}", r.origin, p.name, r.name)
                })?;
                metrics.push((name.clone(), m));
            }
        }
        Ok(PluginMetrics { metrics, call_timeout })
    }

    /// Fetch every plugin metric of a trial: the last point of each is its final value,
    /// points with a progression also go to `curve`.
    pub fn fetch(
        &self,
        index: u64,
        metadata: &Value,
        finals: &mut BTreeMap<String, MetricPoint>,
        curve: &mut Vec<MetricPoint>,
        problems: &mut Vec<String>,
    ) {
        let _ = self.fetch_watched(index, metadata, None, finals, curve, problems);
    }

    /// `fetch`; with `watch`, each call runs on this thread under the watchdog, which ends
    /// the trial through the sender if the call overruns (then `Err(Abandoned)`).
    fn fetch_watched(
        &self,
        index: u64,
        metadata: &Value,
        watch: Option<&Sender<RunnerEvent>>,
        finals: &mut BTreeMap<String, MetricPoint>,
        curve: &mut Vec<MetricPoint>,
        problems: &mut Vec<String>,
    ) -> Result<(), Abandoned> {
        for (name, client) in &self.metrics {
            let mut wait = FETCH_FIRST_WAIT;
            let mut attempt = 1;
            let result = loop {
                let r = match watch {
                    Some(events) => watchdog()
                        .call(self.call_timeout, "fetch", index, events, || client.fetch(index, metadata))
                        .ok_or(Abandoned)?,
                    None => {
                        let (c, meta) = (client.clone(), metadata.clone());
                        call(self.call_timeout, "fetch", move || c.fetch(index, &meta))
                    }
                };
                match r {
                    Err(e) if e.retry() && attempt < FETCH_ATTEMPTS => {
                        std::thread::sleep(wait);
                        wait *= 2;
                        attempt += 1;
                    }
                    r => break r,
                }
            };
            match result {
                Ok(obs) => {
                    for o in &obs {
                        let p =
                            MetricPoint { metric: name.clone(), progression: o.progression, mean: o.mean, sem: o.sem };
                        if o.progression.is_some() {
                            curve.push(p.clone());
                        }
                        finals.insert(name.clone(), p);
                    }
                    if obs.is_empty() {
                        problems.push(format!("metric `{name}`: the plugin's fetch returned no observation"));
                    }
                }
                Err(e) if e.retry() => {
                    problems.push(format!("metric `{name}`: fetch failed {attempt} times, last: {e}"));
                }
                Err(e) => problems.push(format!("metric `{name}`: fetch failed: {e}")),
            }
        }
        Ok(())
    }
}

/// An optional operation the plugin turned out not to implement (learned at its first call).
#[derive(Default)]
struct Support(AtomicBool);

impl Support {
    fn no(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set_no(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Batch polling: the first worker whose poll is due asks about every running trial in one
/// `poll_trials` call; the others take their trial's answer from that round.
#[derive(Default)]
struct Batch {
    state: Mutex<BatchState>,
    done: Condvar,
}

#[derive(Default)]
struct BatchState {
    running: BTreeMap<u64, Value>,
    round: u64,
    answers: HashMap<u64, (u64, Result<Option<Poll>, CallError>)>,
    polling: bool,
}

/// A call overran its `call_timeout`: the watchdog ended its trial.
struct Abandoned;

pub struct PluginRunner {
    client: RunnerClient,
    plugin: String,
    metrics: BTreeMap<String, MetricRule>,
    required: Vec<String>,
    plugin_metrics: PluginMetrics,
    experiment: String,
    config: Value,
    polls: PollSchedule,
    ttl: Option<Duration>,
    call_timeout: Duration,
    keep: KeepTrialDirs,
    batch: Batch,
    batch_poll: Support,
    capacity: Support,
    /// Capacity checks and the deployments they allow happen one at a time.
    deploying: Mutex<()>,
}

/// Consecutive poll errors marked "retry" that a trial survives.
const POLL_RETRIES: u32 = 10;

fn failed(reason: String, lost: bool) -> TrialResult {
    TrialResult::failed(reason, lost)
}

impl PluginRunner {
    /// Load the library, open the runner with its config, and the plugin metrics.
    pub fn new(spec: &ExperimentSpec, polls: PollSchedule, plugin_metrics: PluginMetrics) -> Result<Self, String> {
        let RunnerSpec::Plugin(p) = &spec.runner else { return Err("not a plugin runner".into()) };
        let r = &p.plugin;
        let plugin = check(r, "runner")?;
        let client = plugin.open_runner(&r.name, &r.config, &spec.name).map_err(|e| {
            format!("{}: the plugin `{}` refused to open runner `{}`: {e}", r.origin, plugin.name, r.name)
        })?;
        Ok(PluginRunner {
            client,
            plugin: plugin.name.clone(),
            metrics: spec.metrics.clone(),
            required: spec.required_metrics().into_iter().map(str::to_string).collect(),
            plugin_metrics,
            experiment: spec.name.clone(),
            config: r.config.clone(),
            polls,
            ttl: spec.orchestration.ttl_seconds_for_trials.map(Duration::from_secs_f64),
            call_timeout: p.call_timeout,
            keep: p.keep_trial_dirs,
            batch: Batch::default(),
            batch_poll: Support::default(),
            capacity: Support::default(),
            deploying: Mutex::new(()),
        })
    }

    /// A call on a call thread of this worker: for calls whose overrun must not block
    /// other trials (the batch poll, the capacity check that deployments wait for).
    fn call<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(RunnerClient) -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        let c = self.client.clone();
        call(self.call_timeout, what, move || f(c))
    }

    /// A call about one trial, on this thread, under the watchdog.
    fn direct<T>(
        &self,
        what: &str,
        index: u64,
        events: &Sender<RunnerEvent>,
        f: impl FnOnce(&RunnerClient) -> Result<T, CallError>,
    ) -> Result<Result<T, CallError>, Abandoned> {
        watchdog().call(self.call_timeout, what, index, events, || f(&self.client)).ok_or(Abandoned)
    }

    /// Wait until the runner has room for one more trial (when it says how much it has).
    /// `Err((reason, lost))`: the trial ends without being deployed.
    fn wait_for_capacity(&self, control: &Receiver<Control>) -> Result<(), (String, bool)> {
        if self.capacity.no() {
            return Ok(());
        }
        let mut wait = self.polls.initial;
        loop {
            match self.call("available_capacity", |c| c.available_capacity()) {
                Ok(None) => return Ok(()),
                Ok(Some(n)) if n > 0 => return Ok(()),
                Ok(Some(_)) => {}
                Err(CallError::Unsupported) => {
                    self.capacity.set_no();
                    return Ok(());
                }
                Err(e) => return Err((format!("the plugin's available_capacity failed: {e}"), false)),
            }
            select! {
                recv(control) -> c => {
                    let (reason, lost) = match c {
                        Ok(Control::Stop { reason, lost }) => (reason, lost),
                        Err(_) => ("optx stopped".into(), true),
                    };
                    return Err((format!("{reason} (before it was deployed)"), lost));
                },
                recv(after(wait)) -> _ => {},
            }
            wait = self.polls.next(wait).max(Duration::from_millis(1));
        }
    }

    fn deploy(
        &self,
        job: &TrialJob,
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
    ) -> Result<Result<Value, (String, bool)>, Abandoned> {
        if let Err(e) = std::fs::create_dir_all(&job.trial_dir) {
            return Ok(Err((format!("cannot create the trial dir {}: {e}", job.trial_dir.display()), false)));
        }
        let ctx = self.context(job);
        let _one_at_a_time = (!self.capacity.no()).then(|| self.deploying.lock().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = self.wait_for_capacity(control) {
            return Ok(Err(e));
        }
        let r = self.direct("run_trial", job.index, events, |c| c.run_trial(&ctx))?;
        Ok(r.map_err(|e| (format!("the plugin's run_trial failed: {e}"), false)))
    }

    fn context(&self, job: &TrialJob) -> TrialContext {
        TrialContext {
            trial_index: job.index,
            parameters: match job.arm.to_json() {
                Value::Object(m) => m,
                _ => Default::default(),
            },
            trial_dir: job.trial_dir.to_string_lossy().into_owned(),
            experiment: self.experiment.clone(),
            slot: job.slot,
            config: self.config.clone(),
        }
    }

    /// Poll one trial: through the batch poll when the plugin has one.
    fn poll(
        &self,
        index: u64,
        meta: &Value,
        seen: &mut u64,
        events: &Sender<RunnerEvent>,
    ) -> Result<Result<Option<Poll>, CallError>, Abandoned> {
        if !self.batch_poll.no() {
            if let Some(answer) = self.poll_batched(index, seen) {
                return Ok(answer);
            }
        }
        Ok(self.direct("poll_trial", index, events, |c| c.poll_trial(index, meta))?.map(Some))
    }

    /// `None`: the plugin has no batch poll (learned now); poll this trial alone.
    fn poll_batched(&self, index: u64, seen: &mut u64) -> Option<Result<Option<Poll>, CallError>> {
        let b = &self.batch;
        let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((round, answer)) = st.answers.get(&index) {
                if *round > *seen {
                    *seen = *round;
                    return Some(answer.clone());
                }
            }
            if !st.polling {
                break;
            }
            st = b.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if self.batch_poll.no() {
            return None;
        }
        st.polling = true;
        let asked: Vec<TrialRef> =
            st.running.iter().map(|(i, m)| TrialRef { trial_index: *i, metadata: m.clone() }).collect();
        drop(st);
        tracing::debug!(plugin = %self.plugin, trials = asked.len(), "poll_trials: one call for every running trial");
        let result = self.call("poll_trials", move |c| c.poll_trials(&asked));
        let mut st = b.state.lock().unwrap_or_else(|e| e.into_inner());
        st.polling = false;
        st.round += 1;
        let round = st.round;
        let running: Vec<u64> = st.running.keys().copied().collect();
        match result {
            Err(CallError::Unsupported) => {
                self.batch_poll.set_no();
                b.done.notify_all();
                return None;
            }
            Ok(list) => {
                for t in list {
                    if st.running.contains_key(&t.trial_index) {
                        st.answers.insert(t.trial_index, (round, Ok(Some(t.poll))));
                    } else {
                        tracing::warn!(
                            plugin = %self.plugin,
                            trial = t.trial_index,
                            "poll_trials answered for a trial optx is not running; ignored"
                        );
                    }
                }
                // Trials left out of the answer keep their status: "no news" this round.
                for i in running {
                    if st.answers.get(&i).is_none_or(|a| a.0 != round) {
                        st.answers.insert(i, (round, Ok(None)));
                    }
                }
            }
            Err(e) => {
                for i in running {
                    st.answers.insert(i, (round, Err(e.clone())));
                }
            }
        }
        b.done.notify_all();
        *seen = round;
        Some(st.answers.get(&index).map_or(Ok(None), |a| a.1.clone()))
    }

    fn stop(
        &self,
        index: u64,
        meta: &Value,
        reason: &str,
        events: &Sender<RunnerEvent>,
    ) -> Result<Option<Value>, Abandoned> {
        Ok(match self.direct("stop_trial", index, events, |c| c.stop_trial(index, meta, reason))? {
            Ok(v) => Some(v),
            Err(CallError::Unsupported) => {
                Some(serde_json::json!({"note": "the plugin cannot stop trials (no stop_trial): it may still run"}))
            }
            Err(e) => Some(serde_json::json!({"error": format!("stop_trial failed: {e}")})),
        })
    }

    /// Follow a deployed trial to its end.
    ///
    /// `report` sends the deployment (once) before the first wait: a trial that ends at its
    /// first poll reports its deployment and its end together (one commit, not two).
    fn follow(
        &self,
        job: &TrialJob,
        meta: &Value,
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
        report: &mut dyn FnMut(),
    ) -> Result<TrialResult, Abandoned> {
        let started = job.started_at.unwrap_or_else(SystemTime::now);
        let ttl_at = self.ttl.map(|t| {
            let elapsed = started.elapsed().unwrap_or_default();
            Instant::now() + t.saturating_sub(elapsed)
        });
        let mut wait = self.polls.initial;
        let mut last = Status::Running;
        let mut seen = 0u64;
        let mut errors = 0;
        loop {
            let stop = if wait.is_zero() {
                control.try_recv().ok()
            } else {
                report();
                select! {
                    recv(control) -> c => Some(c.unwrap_or(Control::Stop { reason: "optx stopped".into(), lost: true })),
                    recv(after(wait)) -> _ => None,
                }
            };
            if let Some(Control::Stop { reason, lost }) = stop {
                let stop_metadata = self.stop(job.index, meta, &reason, events)?;
                return Ok(TrialResult { stop_metadata, ..failed(reason, lost) });
            }
            if let Some(at) = ttl_at.filter(|at| Instant::now() >= *at) {
                let _ = at;
                let reason =
                    format!("ran longer than ttl_seconds_for_trials ({}s)", self.ttl.map_or(0.0, |t| t.as_secs_f64()));
                let stop_metadata = self.stop(job.index, meta, &reason, events)?;
                return Ok(TrialResult { stop_metadata, ..failed(reason, false) });
            }
            match self.poll(job.index, meta, &mut seen, events)? {
                Ok(Some(p)) => {
                    errors = 0;
                    match p.status {
                        Status::Staged | Status::Running => {
                            wait = if p.status == last { self.polls.next(wait) } else { self.polls.initial };
                            last = p.status;
                        }
                        Status::Completed => return self.complete(job, meta, events),
                        Status::Failed => {
                            let reason = p.reason.unwrap_or_else(|| "the plugin's runner reported it failed".into());
                            return Ok(failed(reason, false));
                        }
                        Status::Abandoned => {
                            let reason = p.reason.unwrap_or_else(|| "the plugin's runner abandoned it".into());
                            return Ok(TrialResult {
                                outcome: Outcome::Abandoned { reason },
                                ..failed(String::new(), false)
                            });
                        }
                    }
                }
                Ok(None) => wait = self.polls.next(wait),
                Err(e) if e.retry() && errors < POLL_RETRIES => {
                    errors += 1;
                    tracing::warn!(trial = job.index, error = %e, "poll failed; will retry");
                    wait = self.polls.next(wait).max(Duration::from_millis(100));
                }
                Err(e) => return Ok(failed(format!("the plugin's poll_trial failed: {e}"), false)),
            }
            if !wait.is_zero() || last == Status::Staged {
                wait = wait.max(Duration::from_millis(1));
            }
        }
    }

    /// The trial completed: read its metrics.
    fn complete(&self, job: &TrialJob, meta: &Value, events: &Sender<RunnerEvent>) -> Result<TrialResult, Abandoned> {
        let mut finals = BTreeMap::new();
        let mut curve = Vec::new();
        let mut problems = Vec::new();
        read_result_files(&job.trial_dir, &self.metrics, &self.required, &mut finals, &mut problems);
        self.plugin_metrics.fetch_watched(job.index, meta, Some(events), &mut finals, &mut curve, &mut problems)?;
        let missing: Vec<&String> = self.required.iter().filter(|m| !finals.contains_key(*m)).collect();
        let nonfinite = finals
            .values()
            .find(|p| self.required.contains(&p.metric) && !p.mean.is_finite())
            .map(|p| format!("metric `{}` is not finite ({})", p.metric, p.mean));
        let (outcome, note) = if let Some(p) = problems.first().filter(|_| !missing.is_empty()) {
            (Outcome::Failed { reason: p.clone(), lost: false }, None)
        } else if !missing.is_empty() {
            let names = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
            let reason = format!(
                "metric {names} was not reported (looked in result.json in the trial dir and the [metrics] rules)"
            );
            (Outcome::Failed { reason, lost: false }, None)
        } else if let Some(nf) = nonfinite {
            (Outcome::Failed { reason: nf, lost: false }, None)
        } else {
            (Outcome::Completed, problems.first().cloned())
        };
        Ok(TrialResult { outcome, finals: finals.into_values().collect(), curve, stop_metadata: None, note })
    }
}

impl TrialRunner for PluginRunner {
    fn execute(&self, mut job: TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
        let index = job.index;
        let finished = |result| {
            let _ = events.send(RunnerEvent::Finished { index, result });
        };
        let mut pending = None;
        let meta = match job.attach.take() {
            // Running when optx stopped: the plugin finds it again by its run metadata.
            Some(m) => m,
            None => match self.deploy(&job, control, events) {
                Err(Abandoned) => return,
                Ok(Ok(m)) => {
                    job.started_at = Some(SystemTime::now());
                    pending = Some(m.clone());
                    m
                }
                Ok(Err((reason, lost))) => return finished(failed(reason, lost)),
            },
        };
        let mut report = || {
            if let Some(run_metadata) = pending.take() {
                let _ = events.send(RunnerEvent::Deployed { index, run_metadata });
            }
        };
        {
            let mut st = self.batch.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running.insert(index, meta.clone());
        }
        let result = self.follow(&job, &meta, control, events, &mut report);
        {
            let mut st = self.batch.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running.remove(&index);
            st.answers.remove(&index);
        }
        // Abandoned: the watchdog already ended the trial; nothing more is said about it.
        if let Ok(result) = result {
            report();
            finished(result)
        }
    }

    fn cleanup(&self, dir: &Path, failed: bool) {
        let remove = match self.keep {
            KeepTrialDirs::All => false,
            KeepTrialDirs::Failed => !failed,
            KeepTrialDirs::None => true,
        };
        if remove {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn deploy_batch(&self, jobs: Vec<TrialJob>, events: &Sender<RunnerEvent>) {
        let fail = |job: &TrialJob, reason: String| {
            let _ = events.send(RunnerEvent::Finished { index: job.index, result: failed(reason, false) });
        };
        let mut ready = Vec::new();
        for job in jobs {
            match std::fs::create_dir_all(&job.trial_dir) {
                Ok(()) => ready.push(job),
                Err(e) => fail(&job, format!("cannot create the trial dir {}: {e}", job.trial_dir.display())),
            }
        }
        let never = crossbeam_channel::never();
        let mut rest = ready.as_slice();
        while !rest.is_empty() {
            // As many as the runner has room for (all, when it does not say).
            if let Err((reason, _)) = self.wait_for_capacity(&never) {
                return rest.iter().for_each(|j| fail(j, reason.clone()));
            }
            let room = match self.capacity.no() {
                true => rest.len(),
                false => match self.call("available_capacity", |c| c.available_capacity()) {
                    Ok(Some(n)) => n.max(1),
                    _ => rest.len(),
                },
            };
            let (now, later) = rest.split_at(room.min(rest.len()));
            rest = later;
            let contexts: Vec<TrialContext> = now.iter().map(|j| self.context(j)).collect();
            tracing::debug!(plugin = %self.plugin, trials = now.len(), "run_trials: one call deploys them all");
            match self.call("run_trials", move |c| c.run_trials(&contexts)) {
                Ok(metas) => {
                    for (job, run_metadata) in now.iter().zip(metas) {
                        let _ = events.send(RunnerEvent::Deployed { index: job.index, run_metadata });
                    }
                }
                Err(CallError::Unsupported) => {
                    // No batch call: one run_trial each.
                    for job in now {
                        let ctx = self.context(job);
                        match self.direct("run_trial", job.index, events, |c| c.run_trial(&ctx)) {
                            Err(Abandoned) => {}
                            Ok(Ok(run_metadata)) => {
                                let _ = events.send(RunnerEvent::Deployed { index: job.index, run_metadata });
                            }
                            Ok(Err(e)) => fail(job, format!("the plugin's run_trial failed: {e}")),
                        }
                    }
                }
                Err(e) => now.iter().for_each(|j| fail(j, format!("the plugin's run_trials failed: {e}"))),
            }
        }
    }

    fn close(&self) {}

    fn stuck(&self) -> usize {
        watchdog().stuck.load(Ordering::SeqCst)
    }
}
