//! `[runner] kind = "command"`: a local process per trial, run by the shepherd of `exec`.
//!
//! A trial is recorded as started (in its `process.jsonl`, by its own process) before it
//! can run, so whoever finds a trial that has no such record can claim it as never started
//! and be sure that it never runs (see `exec`). The shepherd is restarted when it dies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{after, never, select, Receiver, Sender};

use super::output::{read_result_files, MetricPoint, OutputParser};
use super::tail::Tail;
use super::verdict::verdict;
use super::PluginMetrics;
use super::{Control, Outcome, PollSchedule, RunnerEvent, TrialJob, TrialResult, TrialRunner, Unstarted};
use crate::domain::{CommandSpec, ExperimentSpec, MetricRule, RunnerSpec, Segment, Template};
use crate::exec::{self, ExitInfo, ProcEvent, ProcessRecord, RunInfo, Shepherd, SpawnRequest};

/// How long a new trial may run before its deployment is reported on its own.
const REPORT_DELAY: Duration = Duration::from_millis(20);
/// A shepherd that has not started a trial this long after being asked is stuck.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Shepherds started in one run at most: one that keeps dying is not restarted forever.
const MAX_SHEPHERDS: usize = 10;

pub struct CommandRunner {
    spec: CommandSpec,
    metrics: BTreeMap<String, MetricRule>,
    required: Vec<String>,
    experiment: String,
    base_dir: PathBuf,
    polls: PollSchedule,
    /// How often the output of a trial that reports is read at most: every 20 ms with
    /// early stopping (a stop should reach the trial soon after the report that calls for
    /// it), else at the poll schedule (at least 50 ms apart).
    output_every: Duration,
    /// Early stopping is on: the output is read every `output_every`, without backoff.
    eager: bool,
    /// `ttl_seconds_for_trials`: a trial running longer fails (and is stopped).
    ttl: Option<Duration>,
    exe: PathBuf,
    /// The shepherd that starts new trials, and how many were started in this run.
    shepherd: Mutex<(Arc<Shepherd>, usize)>,
    plugin_metrics: PluginMetrics,
    /// The program, found along PATH once (when the command names it literally and
    /// `env` does not change PATH), so that each spawn skips the search.
    program: Option<PathBuf>,
}

/// How the wait for a process ended.
enum Waited {
    Exited(ExitInfo),
    /// The process is gone and nobody recorded how it ended.
    Gone,
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| {
        let start = b.len().saturating_sub(4096);
        String::from_utf8_lossy(&b[start..]).into_owned()
    });
    let text = text.unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl CommandRunner {
    /// A runner for `spec`, whose trials the shepherd (`exe __shepherd`) starts.
    pub fn new(
        spec: &ExperimentSpec,
        polls: PollSchedule,
        exe: &Path,
        plugin_metrics: PluginMetrics,
    ) -> std::io::Result<Self> {
        let RunnerSpec::Command(command) = &spec.runner else {
            return Err(std::io::Error::other("not a command runner"));
        };
        let shepherd = Arc::new(Shepherd::start(exe)?);
        let literal = match command.argv.first().map(|t| t.segments.as_slice()) {
            Some([Segment::Literal(p)]) if !command.shell => Some(p.clone()),
            _ => None,
        };
        let program = literal.filter(|_| !command.env.iter().any(|(k, _)| k == "PATH")).and_then(|p| exec::which(&p));
        Ok(CommandRunner {
            program,
            spec: command.clone(),
            metrics: spec.metrics.clone(),
            required: spec.required_metrics().into_iter().map(str::to_string).collect(),
            experiment: spec.name.clone(),
            base_dir: spec.base_dir.clone(),
            polls,
            eager: spec.early_stopping.is_some(),
            output_every: if spec.early_stopping.is_some() {
                Duration::from_millis(20)
            } else {
                polls.initial.max(Duration::from_millis(50))
            },
            ttl: spec.orchestration.ttl_seconds_for_trials.map(Duration::from_secs_f64),
            exe: exe.to_path_buf(),
            shepherd: Mutex::new((shepherd, 1)),
            plugin_metrics,
        })
    }

    fn render(&self, t: &Template, job: &TrialJob, quote: bool) -> String {
        t.render_nth(&|n, name| {
            let raw = super::placeholder(job, &self.experiment, name);
            match self.spec.shell_quoting.get(n).filter(|_| quote) {
                Some(q) => crate::domain::shell_quote(&raw, *q),
                None => raw,
            }
        })
    }

    fn request(&self, job: &TrialJob) -> SpawnRequest {
        let argv: Vec<String> = if self.spec.shell {
            let script = self.spec.argv.iter().map(|t| self.render(t, job, true)).collect::<Vec<_>>().join(" ");
            vec!["sh".into(), "-c".into(), script]
        } else {
            self.spec.argv.iter().map(|t| self.render(t, job, false)).collect()
        };
        let mut env = vec![(exec::TOKEN_VAR.to_string(), job.token.clone())];
        env.extend(super::trial_env(job, &self.experiment));
        for (k, t) in &self.spec.env {
            env.push((k.clone(), self.render(t, job, false)));
        }
        let cwd = match &self.spec.workdir {
            Some(t) => self.base_dir.join(self.render(t, job, false)),
            None => self.base_dir.clone(),
        };
        SpawnRequest {
            trial: job.index,
            token: job.token.clone(),
            program: self.program.clone(),
            argv,
            env,
            cwd,
            dir: job.trial_dir.clone(),
        }
    }

    fn tail(&self, job: &TrialJob) -> Tail {
        let parser = OutputParser::new(&self.metrics, &self.spec.progression);
        Tail::new(job.trial_dir.join(exec::STDOUT_FILE), parser, job.stored_points)
    }

    /// The shepherd to start the next trial with: a new one if the last one died (a few
    /// times per run at most). Says so through `events`.
    fn shepherd(&self, events: &Sender<RunnerEvent>) -> Arc<Shepherd> {
        let mut current = self.shepherd.lock().unwrap_or_else(|e| e.into_inner());
        if current.0.is_gone() && current.1 < MAX_SHEPHERDS {
            let old = current.0.pid();
            current.0.close();
            match Shepherd::start(&self.exe) {
                Ok(s) => {
                    current.1 += 1;
                    let msg = format!(
                        "the process that starts trials (optx's shepherd, pid {old}) died; started a new one (pid {}, {} of at most {MAX_SHEPHERDS} in this run)",
                        s.pid(),
                        current.1
                    );
                    tracing::warn!("{msg}");
                    let _ = events.send(RunnerEvent::Notice(msg));
                    current.0 = Arc::new(s);
                }
                Err(e) => tracing::warn!("cannot start a new shepherd: {e}"),
            }
        }
        Arc::clone(&current.0)
    }

    /// The deadline of a trial and what to say when it passes.
    fn deadline(&self, started: SystemTime) -> Option<(Instant, String)> {
        let elapsed = SystemTime::now().duration_since(started).unwrap_or_default();
        let mut best: Option<(Duration, String)> = None;
        if let Some(t) = self.spec.timeout {
            best = Some((t, format!("timed out after {}", humantime::format_duration(t))));
        }
        if let Some(t) = self.ttl {
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, format!("ran longer than ttl_seconds_for_trials ({}s)", t.as_secs_f64())));
            }
        }
        best.map(|(d, why)| (Instant::now() + d.saturating_sub(elapsed), why))
    }

    /// TERM to the group, `stop_grace`, then KILL; wait for the end. Returns how it ended
    /// and whether KILL was needed.
    fn stop(&self, info: RunInfo, rx: Option<&Receiver<ProcEvent>>, job: &TrialJob) -> (Waited, bool) {
        exec::kill_group(info.pid, false);
        let grace_end = Instant::now() + self.spec.stop_grace;
        if let Some(w) = self.wait_until(info, rx, job, Some(grace_end)) {
            return (w, false);
        }
        exec::kill_group(info.pid, true);
        let w = self.wait_until(info, rx, job, Some(Instant::now() + Duration::from_secs(10)));
        (w.unwrap_or(Waited::Gone), true)
    }

    /// Wait for the process to end, until `until`; `None` if it still runs then.
    fn wait_until(
        &self,
        info: RunInfo,
        rx: Option<&Receiver<ProcEvent>>,
        job: &TrialJob,
        until: Option<Instant>,
    ) -> Option<Waited> {
        let (dir, token) = (&job.trial_dir, job.token.as_str());
        let mut step = Duration::from_millis(20);
        loop {
            if let Some(rx) = rx {
                let timeout = until.map_or(Duration::from_secs(3600), |u| u.saturating_duration_since(Instant::now()));
                match rx.recv_timeout(timeout) {
                    Ok(ProcEvent::Exited(e)) => return Some(Waited::Exited(e)),
                    Ok(ProcEvent::ShepherdGone) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        return self.wait_until(info, None, job, until)
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => return None,
                }
            }
            if let Some(e) = exec::read_exit(dir, token) {
                return Some(Waited::Exited(e));
            }
            // A zombie whose parent (its shepherd) lives is about to be reaped and recorded:
            // it has not ended as far as its record goes.
            let reaping = exec::zombie_parent(info.pid, info.start).is_some_and(|p| p != 1 && exec::alive(p, None));
            if !reaping && !exec::alive(info.pid, info.start) {
                // The shepherd may be writing the status right now: look once more.
                std::thread::sleep(Duration::from_millis(50));
                return Some(exec::read_exit(dir, token).map_or(Waited::Gone, Waited::Exited));
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return None;
            }
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(200));
        }
    }

    /// Follow a running process to its end: events from the shepherd (or, without one,
    /// its files), stop requests, the deadline, and the output as it grows.
    fn follow(
        &self,
        job: &TrialJob,
        info: RunInfo,
        mut rx: Option<Receiver<ProcEvent>>,
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
        tail: &mut Tail,
    ) -> TrialResult {
        let deadline = self.deadline(job.started_at.unwrap_or_else(SystemTime::now));
        let mut interval = self.output_every;
        // Without a dispatcher to send them, there are no more stop requests.
        let mut control = control.clone();
        loop {
            let tick = after(interval);
            let dl = deadline.as_ref().map_or_else(never, |(at, _)| crossbeam_channel::at(*at));
            let shepherd_rx = rx.clone().unwrap_or_else(never);
            select! {
                recv(shepherd_rx) -> ev => match ev {
                    Ok(ProcEvent::Exited(e)) => return self.finish(job, Waited::Exited(e), tail, None),
                    Ok(ProcEvent::ShepherdGone) | Err(_) => rx = None,
                },
                recv(control) -> c => {
                    let Ok(Control::Stop { reason, lost }) = c else {
                        control = never();
                        continue;
                    };
                    return self.stopped(job, info, rx.as_ref(), tail, &reason, lost);
                },
                recv(dl) -> _ => {
                    let why = deadline.as_ref().map(|d| d.1.clone()).unwrap_or_default();
                    let (w, killed) = self.stop(info, rx.as_ref(), job);
                    let how = if killed { format!("SIGTERM, then SIGKILL after {}", humantime::format_duration(self.spec.stop_grace)) } else { "SIGTERM".into() };
                    let stop = serde_json::json!({"reason": why, "signals": how});
                    let mut r = self.finish(job, w, tail, Some(stop));
                    let stderr = last_lines(&job.trial_dir.join(exec::STDERR_FILE), 5);
                    let tail_note = if stderr.is_empty() { String::new() } else { format!("; stderr ends with:\n{stderr}") };
                    r.outcome = Outcome::Failed { reason: format!("{why} (stopped with {how}){tail_note}"), lost: false };
                    return r;
                },
                recv(tick) -> _ => {
                    let read = tail.read(false);
                    let points = tail.curve(read);
                    if !points.is_empty() {
                        let _ = events.send(RunnerEvent::Progress { index: job.index, points });
                        interval = self.output_every;
                    } else if self.eager {
                        // With early stopping, a report is read within 20 ms, however long
                        // the trial was silent before it.
                        interval = self.output_every;
                    } else {
                        interval = self.polls.next(interval).max(self.output_every);
                    }
                    if rx.is_none() {
                        if let Some(w) = self.wait_until(info, None, job, Some(Instant::now())) {
                            return self.finish(job, w, tail, None);
                        }
                    }
                },
            }
        }
    }

    /// Stop a running trial at the dispatcher's request, and say so in its outcome.
    fn stopped(
        &self,
        job: &TrialJob,
        info: RunInfo,
        rx: Option<&Receiver<ProcEvent>>,
        tail: &mut Tail,
        reason: &str,
        lost: bool,
    ) -> TrialResult {
        let (w, killed) = self.stop(info, rx, job);
        let how = if killed { "SIGTERM, then SIGKILL" } else { "SIGTERM" };
        let stop = serde_json::json!({"reason": reason, "signals": how});
        let mut r = self.finish(job, w, tail, Some(stop));
        r.outcome = Outcome::Failed { reason: format!("{reason} (stopped with {how})"), lost };
        r
    }

    /// Read everything the trial left and decide its outcome.
    fn finish(
        &self,
        job: &TrialJob,
        waited: Waited,
        tail: &mut Tail,
        stop_metadata: Option<serde_json::Value>,
    ) -> TrialResult {
        let read = tail.read(true);
        let mut curve = tail.curve(read);
        let dir = &job.trial_dir;
        let mut finals: BTreeMap<String, MetricPoint> = tail.parser.last.clone();
        let mut problems: Vec<String> = Vec::new();
        // What the trial left beside its output (the result file, `file` rules, plugin
        // metrics): it wins over what was printed, and without an exit status only it
        // completes a trial.
        let mut results = BTreeMap::new();
        read_result_files(dir, &self.metrics, &self.required, &mut results, &mut problems);
        let meta = serde_json::json!({ "trial_dir": dir });
        self.plugin_metrics.fetch(job.index, &meta, &mut results, &mut curve, &mut problems);
        let from_results = self.required.iter().all(|m| results.get(m).is_some_and(|p| p.mean.is_finite()));
        for (name, mut p) in results {
            if p.progression.is_none() {
                p.progression = finals.get(&name).and_then(|q| q.progression);
            }
            finals.insert(name, p);
        }
        let finals_vec: Vec<MetricPoint> = finals.values().cloned().collect();
        let stderr_tail = || {
            let s = last_lines(&dir.join(exec::STDERR_FILE), 5);
            if s.is_empty() {
                String::new()
            } else {
                format!("; stderr ends with:\n{s}")
            }
        };
        let (outcome, note) = match waited {
            Waited::Exited(e) if !e.success() => {
                (Outcome::Failed { reason: format!("{}{}", e.describe(), stderr_tail()), lost: false }, None)
            }
            Waited::Gone if !from_results => (
                Outcome::Failed {
                    reason: "the process ended while optx was not running, leaving no exit status and no result file: its outcome is unknown (a partial learning curve is not a result)".into(),
                    lost: true,
                },
                None,
            ),
            w => {
                let gone = matches!(w, Waited::Gone).then(|| "the exit status is unknown (the process ended while optx was not running); completed from its result file".to_string());
                let looked = format!(
                    "result.json, JSON lines and name=value pairs on stdout{}",
                    if self.metrics.values().any(|r| !matches!(r, MetricRule::Default)) { ", and the [metrics] rules" } else { "" }
                );
                // What it printed instead, and how to read it, before stderr's last lines.
                let after = |missing: &[&String]| {
                    format!("{}{}", super::hint::missing_metrics(&dir.join(exec::STDOUT_FILE), missing), stderr_tail())
                };
                let (outcome, problem) = verdict(&self.required, &finals, &problems, &looked, &after);
                let note = match (gone, problem) {
                    (Some(n), Some(p)) if outcome == Outcome::Completed => Some(format!("{n}; {p}")),
                    (n, p) if outcome == Outcome::Completed => n.or(p),
                    (n, _) => n,
                };
                (outcome, note)
            }
        };
        TrialResult { outcome, finals: finals_vec, curve, stop_metadata, note }
    }

    /// An outcome unknowable through no fault of the trial: it runs again.
    fn lost(reason: String) -> TrialResult {
        TrialResult::failed(reason, true)
    }

    fn failed(reason: String) -> TrialResult {
        TrialResult::failed(reason, false)
    }
}

/// Create a new trial's dir. A dir already there belongs to nobody (a trial never deploys
/// twice into one dir): it is set aside, never reused or overwritten.
fn new_trial_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            for n in 1.. {
                let aside = PathBuf::from(format!("{}.stale-{n}", dir.display()));
                match renameat_with(CWD, dir, CWD, &aside, RenameFlags::NOREPLACE) {
                    Ok(()) => {
                        tracing::warn!("{} exists already: set aside as {}", dir.display(), aside.display());
                        break;
                    }
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            std::fs::create_dir(dir)
        }
        r => r,
    }
}

fn run_metadata(job: &TrialJob, info: RunInfo) -> serde_json::Value {
    serde_json::json!({"pid": info.pid, "start": info.start, "trial_dir": job.trial_dir, "host": exec::hostname()})
}

impl CommandRunner {
    /// Claim a trial whose process has not recorded its start as never started, so that
    /// it never can (a shepherd that is frozen or slow would otherwise start it later).
    /// `Ok(None)`: claimed, it never ran; `Ok(Some(info))`: it started after all (pid 0:
    /// it started, its pid was never written, and no process of it runs any more).
    fn claim_unstarted(&self, job: &TrialJob, why: &str) -> Result<Option<RunInfo>, String> {
        let dir = &job.trial_dir;
        let token = job.token.as_str();
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            let st = exec::read_process(dir, token);
            if let Some(run) = st.run {
                return Ok(Some(run));
            }
            // Claimed by a resume, or its exec failed: it never ran.
            if st.claimed || st.exit.is_some() {
                return Ok(None);
            }
            if !st.exists {
                let record = ProcessRecord::Claimed { never_started: why.to_string(), token: Some(job.token.clone()) };
                match exec::claim(dir, &record) {
                    Ok(exec::Claim::Won) => return Ok(None),
                    Ok(exec::Claim::Taken) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("cannot claim {}: {e}", dir.display())),
                }
            }
            // Its process claimed the record and its pid is not written yet (or never will
            // be: the shepherd died in between). Look again shortly, then for the process.
            if Instant::now() >= end {
                return match exec::find_trial_process(&dir.join(exec::STDOUT_FILE), token) {
                    Some(info) => Ok(Some(info)),
                    // It started and is gone: what it left decides (a result file or lost).
                    None => Ok(Some(RunInfo { pid: 0, start: None })),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a new trial's process to record its start, or to end at once.
    fn await_start(
        &self,
        job: &TrialJob,
        rx: &Receiver<ProcEvent>,
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
        tail: &mut Tail,
    ) -> Result<RunInfo, Box<TrialResult>> {
        let deployed = |info: RunInfo| {
            let _ = events.send(RunnerEvent::Deployed { index: job.index, run_metadata: run_metadata(job, info) });
        };
        let give_up = Instant::now() + START_TIMEOUT;
        // A short trial reports its deployment and its end together (one transaction, one
        // wake-up of the dispatcher); a longer one reports it after REPORT_DELAY.
        let mut wait = REPORT_DELAY;
        let mut control = control.clone();
        // A stop asked for before the start was seen: carried out once it is.
        let mut stop: Option<(String, bool)> = None;
        loop {
            let why = select! {
                recv(rx) -> ev => match ev {
                    Ok(ProcEvent::Exited(e @ ExitInfo::SpawnError(_))) => {
                        // It may have started after all if the request was stale; it was not.
                        return Err(Box::new(Self::failed(e.describe())));
                    }
                    Ok(ProcEvent::Exited(exit)) => {
                        let info = exec::read_run_info(&job.trial_dir, &job.token).unwrap_or(RunInfo { pid: 0, start: None });
                        deployed(info);
                        return Err(Box::new(self.finish(job, Waited::Exited(exit), tail, None)));
                    }
                    Ok(ProcEvent::ShepherdGone) | Err(_) => {
                        Some("the process that starts trials (optx's shepherd) died before starting it".to_string())
                    }
                },
                recv(control) -> c => match c {
                    Ok(Control::Stop { reason, lost }) => {
                        let why = format!("{reason} before it started");
                        stop = Some((reason, lost));
                        Some(why)
                    }
                    Err(_) => {
                        control = never();
                        None
                    }
                },
                default(wait) => None,
            };
            let started = |info: RunInfo, tail: &mut Tail| {
                deployed(info);
                match &stop {
                    _ if info.pid == 0 => Err(Box::new(self.finish(job, Waited::Gone, tail, None))),
                    Some((reason, lost)) => Err(Box::new(self.stopped(job, info, Some(rx), tail, reason, *lost))),
                    None => Ok(info),
                }
            };
            if let Some(info) = exec::read_run_info(&job.trial_dir, &job.token) {
                return started(info, tail);
            }
            let why = why.or_else(|| {
                (Instant::now() >= give_up).then(|| {
                    format!("the process that starts trials did not start it within {}s", START_TIMEOUT.as_secs())
                })
            });
            if let Some(why) = why {
                return match self.claim_unstarted(job, &why) {
                    Ok(Some(info)) => started(info, tail),
                    Ok(None) => Err(Box::new(Self::lost(format!("{why}; it never ran and runs again")))),
                    Err(e) => Err(Box::new(Self::lost(format!("{why}; {e}")))),
                };
            }
            wait = Duration::from_millis(10);
        }
    }
}

impl TrialRunner for CommandRunner {
    fn execute(&self, mut job: TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
        let finished = |result| {
            let _ = events.send(RunnerEvent::Finished { index: job.index, result });
        };
        let mut tail = self.tail(&job);
        if let Some(meta) = &job.attach {
            // A local process of another host (a worker there died) cannot be followed here.
            if let Some(host) = meta.get("host").and_then(|h| h.as_str()).filter(|h| *h != exec::hostname()) {
                let why = format!("it ran on {host}, whose optx died: its outcome cannot be read from this host");
                return finished(Self::lost(why));
            }
            // A trial that was running when optx stopped: follow it through its files.
            let info: Option<RunInfo> = serde_json::from_value::<RunInfo>(meta.clone())
                .ok()
                .filter(|i| i.pid != 0)
                .or_else(|| exec::read_run_info(&job.trial_dir, &job.token));
            let Some(info) = info else {
                // It started but no pid was ever written, and its process is gone.
                let r = self.finish(&job, Waited::Gone, &mut tail, None);
                return finished(r);
            };
            let r = self.follow(&job, info, None, control, events, &mut tail);
            return finished(r);
        }
        if let Err(e) = new_trial_dir(&job.trial_dir) {
            return finished(Self::failed(format!("cannot create the trial dir {}: {e}", job.trial_dir.display())));
        }
        let params = serde_json::to_vec_pretty(&job.arm.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(job.trial_dir.join("params.json"), params) {
            return finished(Self::failed(format!("cannot write params.json: {e}")));
        }
        let req = self.request(&job);
        let shepherd = self.shepherd(events);
        let rx = shepherd.spawn(&req);
        job.started_at = Some(SystemTime::now());
        let info = match self.await_start(&job, &rx, control, events, &mut tail) {
            Ok(info) => info,
            Err(result) => return finished(*result),
        };
        let r = self.follow(&job, info, Some(rx), control, events, &mut tail);
        finished(r)
    }

    fn unstarted(&self, job: &TrialJob, _staged: bool) -> Unstarted {
        if !job.trial_dir.exists() {
            return Unstarted::Never;
        }
        match self.claim_unstarted(job, "optx stopped before the trial started; a resume claimed it") {
            Ok(Some(info)) => Unstarted::Started(run_metadata(job, info)),
            Ok(None) => match std::fs::remove_dir_all(&job.trial_dir) {
                Ok(()) => Unstarted::Never,
                Err(e) => Unstarted::Unknown(format!("cannot remove the unused trial dir: {e}")),
            },
            Err(e) => Unstarted::Unknown(e),
        }
    }

    fn cleanup(&self, dir: &Path, failed: bool) {
        crate::runners::keep_or_remove(self.spec.keep_trial_dirs, dir, failed)
    }

    fn close(&self) {
        self.shepherd.lock().unwrap_or_else(|e| e.into_inner()).0.close();
    }
}
