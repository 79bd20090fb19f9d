//! L3: the closed loop.
//!
//! One dispatcher thread owns the run state and is the only writer to the store. A pool
//! of worker threads runs trials through the [`TrialRunner`]; workers send
//! [`RunnerEvent`]s, and the dispatcher `select!`s over them, a signal channel and the
//! run's deadline. Every transition and observation is committed before the dispatcher
//! reports it or acts on it (events that arrive together share one transaction).
//!
//! Accounting (CONFIG.md "Trial lifecycle and accounting"): a *lost* trial (its outcome
//! unknowable through no fault of its own) does not count toward `max_trials` nor the
//! failure rate, and its arm runs again as a new trial; everything else counts.

mod launch;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, unbounded, Receiver, Sender};

pub use launch::{launch, Launch, RunError};

use crate::domain::{Arm, ExperimentSpec, Observation, OutcomeConstraint, Trial, TrialStatus};
use crate::generate::{GenState, Generator};
use crate::runners::{Control, Outcome, RunnerEvent, TrialJob, TrialRunner, Unstarted};
use crate::store::{self, NewTrial, Store, TransitionData, Tx};

/// What the run tells whoever watches it (the CLI prints these).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Started {
        name: String,
        store: PathBuf,
        max_trials: u64,
        parallelism: usize,
        method: String,
        existing: u64,
    },
    Reattached {
        index: u64,
        pid: Option<u64>,
    },
    Deployed {
        index: u64,
        params: serde_json::Value,
        generation: String,
    },
    /// `values`: each objective's name and value; `best`: the best so far, or on the
    /// Pareto front for several objectives.
    Completed {
        index: u64,
        values: Vec<(String, Option<f64>)>,
        feasible: bool,
        best: bool,
        note: Option<String>,
    },
    Failed {
        index: u64,
        reason: String,
        lost: bool,
        will_retry: bool,
    },
    Notice(String),
}

pub trait EventSink {
    fn event(&mut self, e: &RunEvent);
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// max_trials ended, the space was exhausted, or a budget (`timeout_hours`, `max_cost`)
    /// was reached.
    Done,
    /// The failure rate exceeded `tolerated_trial_failure_rate`.
    FailureRate,
    /// Deployment after deployment was lost (the process that starts trials keeps dying,
    /// say): stopping beats an endless loop of re-runs.
    TooManyLost,
    /// Ctrl-C or SIGTERM: state saved, resumable.
    Interrupted,
}

struct Running {
    control: Sender<Control>,
    slot: usize,
    /// A trial deployed in a batch: the job that follows it once its deployment is committed.
    follow: Option<(TrialJob, Receiver<Control>)>,
}

/// An arm to run again as a new trial: a retry of a failed arm or a re-run of a lost one.
struct Rerun {
    arm: Arm,
    of: u64,
    attempt: u32,
    label: &'static str,
}

/// What the dispatcher does once a transaction has committed.
enum Effect {
    Print(RunEvent),
    Dispatch(TrialJob, Receiver<Control>),
    /// Deploy with the other `Deploy`s of this wake-up in one runner call
    /// (`run_trials_in_batches`).
    Deploy(TrialJob),
    Cleanup {
        index: u64,
        failed: bool,
    },
}

/// The run state. It changes only inside a store transaction, which also records the
/// change; what it leads to (printing, deploying) waits for the commit as [`Effect`]s.
struct State<'a> {
    spec: &'a ExperimentSpec,
    generator: Generator<'a>,
    session: i64,
    trials: Vec<Trial>,
    /// Arms deployed and neither lost nor failed: never proposed again.
    taken: HashMap<String, u32>,
    reruns: VecDeque<Rerun>,
    running: HashMap<u64, Running>,
    free_slots: BTreeSet<usize>,
    /// This session's counts for the failure rate.
    deployed_now: u64,
    failed_now: u64,
    /// The best trial so far, or the Pareto front.
    best: Vec<crate::domain::Point>,
    cost: f64,
    /// Why deployment stopped, if it did.
    halt: Option<(RunEnd, String)>,
    exhausted: bool,
    /// Trials that are not lost (a count: the budget is checked per deployment).
    nonlost: u64,
    /// Candidates handed to a worker and not deployed yet.
    undeployed: BTreeSet<u64>,
    effects: Vec<Effect>,
    /// `<store name>.trials/`, where every trial dir goes.
    trials_root: PathBuf,
    /// Trials of this session that were lost (the failure rate leaves them out).
    lost_now: u64,
    /// Trials of this session lost one after the other, with no other end between them.
    lost_streak: u64,
    /// The store's identity, in the token of every trial's records.
    store_id: String,
    /// Points of learning curves stored for each trial that was running (to re-attach).
    stored_points: HashMap<u64, usize>,
    /// Set by the signal thread as soon as an interrupt arrives, before the dispatcher
    /// reads it: a proposal that was being computed is then not deployed.
    interrupted: Arc<AtomicBool>,
}

/// Each objective's value from a trial's final metrics.
fn objective_values(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> Vec<Option<f64>> {
    let metric = |m: &str| finals.iter().find(|p| p.metric == m).map(|p| p.mean);
    spec.goal.objectives.iter().map(|o| o.value(metric)).collect()
}

fn feasible(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> bool {
    let values = finals.iter().map(|p| (p.metric.clone(), p.mean)).collect();
    OutcomeConstraint::all_satisfied(&spec.outcome_constraints, &values)
}

fn observation(trial: u64, p: &crate::runners::MetricPoint, is_final: bool) -> Observation {
    Observation { trial, metric: p.metric.clone(), progression: p.progression, mean: p.mean, sem: p.sem, is_final }
}

impl<'a> State<'a> {
    fn trial_dir(&self, index: u64) -> PathBuf {
        self.trials_root.join(index.to_string())
    }

    fn take_arm(&mut self, key: &str) {
        *self.taken.entry(key.to_string()).or_default() += 1;
    }

    fn release_arm(&mut self, key: &str) {
        if let Some(n) = self.taken.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.taken.remove(key);
            }
        }
    }

    fn print(&mut self, e: RunEvent) {
        self.effects.push(Effect::Print(e));
    }

    /// Hand a trial to a worker once the transaction commits.
    fn dispatch(&mut self, index: u64, arm: Arm, attach: Option<serde_json::Value>, slot: Option<usize>) {
        let slot = match slot.filter(|s| self.free_slots.remove(s)) {
            Some(s) => s,
            None => self.free_slots.pop_first().unwrap_or(self.running.len()),
        };
        let started_at = self.trials[index as usize].started_at.as_deref().and_then(store::parse_time);
        let (ctl_tx, ctl_rx) = unbounded();
        let job = TrialJob {
            index,
            arm,
            slot,
            trial_dir: self.trial_dir(index),
            attach,
            started_at,
            token: crate::exec::token(&self.store_id, index),
            stored_points: self.stored_points.remove(&index).unwrap_or(0),
        };
        if self.spec.orchestration.run_trials_in_batches && job.attach.is_none() {
            self.running.insert(index, Running { control: ctl_tx, slot, follow: Some((job.clone(), ctl_rx)) });
            self.effects.push(Effect::Deploy(job));
        } else {
            self.running.insert(index, Running { control: ctl_tx, slot, follow: None });
            self.effects.push(Effect::Dispatch(job, ctl_rx));
        }
    }

    /// Create new trials while there is room, budget and no reason to stop.
    fn fill(&mut self, tx: &mut Tx) -> Result<(), store::StoreError> {
        let o = &self.spec.orchestration;
        let max_pending = o.max_pending_trials.unwrap_or(o.parallelism).max(1);
        while self.halt.is_none()
            && !self.exhausted
            && self.running.len() < o.parallelism
            && self.nonlost < o.max_trials
            && self.undeployed.len() < max_pending
        {
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let (arm, generation, rerun_of, attempt) = match self.reruns.pop_front() {
                Some(r) => (r.arm, r.label.to_string(), Some(r.of), r.attempt),
                None => {
                    let taken = &self.taken;
                    match self.generator.next(&|k| taken.contains_key(k)) {
                        Ok(p) => (p.arm, p.method.to_string(), None, 1),
                        Err(e) => {
                            self.exhausted = true;
                            self.print(RunEvent::Notice(format!("{e}; no more trials will be deployed")));
                            break;
                        }
                    }
                }
            };
            // An interrupt that came while the proposal was computed: it is not deployed
            // (the generator's state is not saved, so a resume proposes it again).
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let index = self.trials.len() as u64;
            let params = arm.to_json();
            // The trial gets exactly what the store holds: the arm as read back from it.
            let arm = Arm::from_json(&self.spec.space, &params).unwrap_or(arm);
            let key = arm.key();
            let state = serde_json::to_value(&self.generator.state).unwrap_or_default();
            let session = self.session;
            tx.insert_trial(&NewTrial {
                index,
                arm_key: &key,
                parameters: &params,
                generation: &generation,
                rerun_of,
                attempt,
                session,
            })?;
            tx.set_generator_state("sequence", &state)?;
            self.trials.push(Trial {
                index,
                status: TrialStatus::Candidate,
                lost: false,
                arm_key: key.clone(),
                parameters: params.clone(),
                generation: generation.clone(),
                rerun_of,
                attempt,
                slot: None,
                session,
                feasible: None,
                reason: None,
                run_metadata: None,
                stop_metadata: None,
                trial_dir: None,
                created_at: tx.time().to_string(),
                staged_at: None,
                started_at: None,
                completed_at: None,
            });
            self.take_arm(&key);
            self.nonlost += 1;
            self.undeployed.insert(index);
            self.deployed_now += 1;
            tracing::debug!(trial = index, %generation, "new trial");
            self.print(RunEvent::Deployed { index, params, generation });
            if self.generator.learns() {
                self.generator.pending(index, &arm);
            }
            self.dispatch(index, arm, None, None);
        }
        Ok(())
    }

    /// Record that a trial runs (through STAGED if it is still a candidate), with the run
    /// metadata that lets a restarted optx find it.
    fn mark_running(
        &mut self,
        tx: &mut Tx,
        index: u64,
        meta: serde_json::Value,
        slot: Option<usize>,
    ) -> Result<(), store::StoreError> {
        let dir = meta.get("trial_dir").and_then(|d| d.as_str()).map(str::to_string);
        let data = TransitionData { run_metadata: Some(&meta), slot, trial_dir: dir.as_deref(), ..Default::default() };
        let t = &mut self.trials[index as usize];
        if t.status == TrialStatus::Candidate {
            tx.transition(index, TrialStatus::Candidate, TrialStatus::Staged, &data)?;
            t.status = TrialStatus::Staged;
        }
        tx.transition(index, TrialStatus::Staged, TrialStatus::Running, &data)?;
        t.status = TrialStatus::Running;
        t.started_at = Some(tx.time().to_string());
        t.run_metadata = Some(meta);
        self.undeployed.remove(&index);
        Ok(())
    }

    /// Record a batch of worker events and decide what follows, in one transaction.
    fn apply(&mut self, tx: &mut Tx, batch: Vec<RunnerEvent>) -> Result<(), store::StoreError> {
        for ev in batch {
            match ev {
                RunnerEvent::Deployed { index, run_metadata } => {
                    let slot = self.running.get(&index).map(|r| r.slot);
                    let follow = self.running.get_mut(&index).and_then(|r| r.follow.take());
                    if let Some((mut job, ctl)) = follow {
                        // Deployed in a batch: a worker follows it from here, as after a resume.
                        job.attach = Some(run_metadata.clone());
                        job.started_at = Some(std::time::SystemTime::now());
                        self.effects.push(Effect::Dispatch(job, ctl));
                    }
                    self.mark_running(tx, index, run_metadata, slot)?;
                }
                RunnerEvent::Progress { index, points } => {
                    // SQLite has no NaN (it would be NULL): a non-finite value is kept in
                    // the failure reason, not as an observation.
                    for p in points.iter().filter(|p| p.mean.is_finite()) {
                        tx.observation(&observation(index, p, false))?;
                    }
                }
                RunnerEvent::Finished { index, result } => self.finish(tx, index, result)?,
                RunnerEvent::Notice(msg) => self.print(RunEvent::Notice(msg)),
            }
        }
        self.fill(tx)
    }

    fn finish(
        &mut self,
        tx: &mut Tx,
        index: u64,
        result: crate::runners::TrialResult,
    ) -> Result<(), store::StoreError> {
        let spec = self.spec;
        for p in result.curve.iter().filter(|p| p.mean.is_finite()) {
            tx.observation(&observation(index, p, false))?;
        }
        for p in result.finals.iter().filter(|p| p.mean.is_finite()) {
            tx.observation(&observation(index, p, true))?;
        }
        let (to, reason, lost, feas) = match &result.outcome {
            Outcome::Completed => {
                (TrialStatus::Completed, result.note.clone(), false, Some(feasible(spec, &result.finals)))
            }
            Outcome::Failed { reason, lost } => (TrialStatus::Failed, Some(reason.clone()), *lost, None),
            Outcome::Abandoned { reason } => (TrialStatus::Abandoned, Some(reason.clone()), false, None),
        };
        let data = TransitionData {
            reason: reason.as_deref(),
            lost,
            feasible: feas,
            stop_metadata: result.stop_metadata.as_ref(),
            ..Default::default()
        };
        // A trial that never started fails straight from CANDIDATE or STAGED.
        let t = &mut self.trials[index as usize];
        tx.transition(index, t.status, to, &data)?;
        t.status = to;
        if lost && !t.lost {
            self.nonlost -= 1;
            if t.session == self.session {
                self.lost_now += 1;
            }
        }
        t.lost = lost;
        t.reason = reason;
        t.feasible = feas;
        t.completed_at = Some(tx.time().to_string());
        let t = t.clone();
        if self.generator.learns() {
            match (&result.outcome, Arm::from_json(&spec.space, &t.parameters)) {
                (Outcome::Completed, Some(arm)) => {
                    let values = result.finals.iter().map(|p| (p.metric.clone(), (p.mean, p.sem))).collect();
                    self.generator.observe(index, &arm, values);
                }
                _ => self.generator.forget(index),
            }
        }
        // What an ended trial keeps in memory: enough for accounting (the store has the rest),
        // so that a long run's memory does not grow with each trial's parameters and metadata.
        self.trials[index as usize].shrink();
        self.undeployed.remove(&index);
        if let Some(r) = self.running.remove(&index) {
            self.free_slots.insert(r.slot);
        }
        tracing::debug!(trial = index, status = %to, "trial ended");
        match &result.outcome {
            Outcome::Completed => {
                self.lost_streak = 0;
                let values = objective_values(spec, &result.finals);
                let feas = feas.unwrap_or(false);
                let all: Option<Vec<f64>> = values.iter().copied().collect();
                let best = match all {
                    Some(v) if feas => spec.goal.admit(&mut self.best, index, v),
                    _ => false,
                };
                self.cost += result.finals.iter().find(|p| p.metric == "cost").map_or(0.0, |p| p.mean);
                let note = result.note.clone();
                self.print(RunEvent::Completed {
                    index,
                    values: spec.goal.objectives.iter().map(|o| o.name.clone()).zip(values).collect(),
                    feasible: feas,
                    best,
                    note,
                });
                self.effects.push(Effect::Cleanup { index, failed: false });
                if let Some(max) = spec.orchestration.max_cost {
                    if self.cost >= max && self.halt.is_none() {
                        self.halt =
                            Some((RunEnd::Done, format!("the cost budget is spent ({} >= max_cost {max})", self.cost)));
                        self.announce_halt();
                    }
                }
            }
            Outcome::Failed { reason, .. } | Outcome::Abandoned { reason } => {
                let abandoned = matches!(result.outcome, Outcome::Abandoned { .. });
                // An abandoned arm is not run again (CONFIG.md "No duplicates"); a failed or
                // lost one may be, as a retry or a re-run.
                if !abandoned {
                    self.release_arm(&t.arm_key);
                }
                let retry = !lost && !abandoned && t.attempt <= spec.orchestration.retries_per_failed_arm;
                if let Some(arm) = Arm::from_json(&spec.space, &t.parameters) {
                    if lost {
                        self.reruns.push_back(Rerun { arm, of: index, attempt: t.attempt, label: "rerun" });
                    } else if retry {
                        self.reruns.push_back(Rerun { arm, of: index, attempt: t.attempt + 1, label: "retry" });
                    }
                }
                let shown = if abandoned { format!("abandoned: {reason}") } else { reason.clone() };
                self.print(RunEvent::Failed { index, reason: shown, lost, will_retry: retry });
                self.effects.push(Effect::Cleanup { index, failed: true });
                if !lost {
                    self.lost_streak = 0;
                }
                if !lost && t.session == self.session {
                    self.failed_now += 1;
                    self.check_failure_rate();
                }
                if lost && t.session == self.session {
                    self.lost_streak += 1;
                    self.check_lost_streak(reason);
                }
            }
        }
        Ok(())
    }

    fn check_failure_rate(&mut self) {
        let o = &self.spec.orchestration;
        let deployed = self.deployed_now.saturating_sub(self.lost_now).max(1);
        let rate = self.failed_now as f64 / deployed as f64;
        if self.failed_now >= o.min_failed_trials_for_failure_rate_check
            && rate > o.tolerated_trial_failure_rate
            && self.halt.as_ref().is_none_or(|(e, _)| *e != RunEnd::FailureRate)
        {
            self.halt = Some((
                RunEnd::FailureRate,
                format!(
                    "{} of {} trials deployed in this session failed ({:.0}%, tolerated_trial_failure_rate is {:.0}%): stopping; fix the cause and `optx resume`",
                    self.failed_now,
                    deployed,
                    rate * 100.0,
                    o.tolerated_trial_failure_rate * 100.0
                ),
            ));
            self.announce_halt();
        }
    }

    /// A new trial that will not be deployed after all (an interrupt came first).
    fn not_deployed(&mut self, index: u64) -> String {
        self.undeployed.remove(&index);
        if let Some(r) = self.running.remove(&index) {
            self.free_slots.insert(r.slot);
        }
        format!("trial {index} was not started: interrupted first; `optx resume` starts it")
    }

    /// Stop once this many deployments in a row were lost: they are not counted, so
    /// nothing else would end a run whose every trial is lost.
    fn check_lost_streak(&mut self, reason: &str) {
        let bound = (2 * self.spec.orchestration.parallelism as u64).max(5);
        if self.lost_streak >= bound && self.halt.is_none() {
            let first = reason.lines().next().unwrap_or(reason);
            self.halt = Some((
                RunEnd::TooManyLost,
                format!(
                    "{} trials in a row were lost (the last: {first}): stopping instead of running their arms again and again; fix the cause and `optx resume`",
                    self.lost_streak
                ),
            ));
            self.announce_halt();
        }
    }

    fn announce_halt(&mut self) {
        if let Some((_, why)) = &self.halt {
            let n = self.running.len();
            let wait = if n > 0 { format!("; waiting for {n} running trial(s)") } else { String::new() };
            let msg = format!("{why}{wait}");
            self.print(RunEvent::Notice(msg));
        }
    }

    /// Reconcile trials that were not finished when optx last stopped.
    fn reconcile(&mut self, tx: &mut Tx, runner: &dyn TrialRunner) -> Result<(), store::StoreError> {
        let open: Vec<Trial> = self.trials.iter().filter(|t| !t.status.is_terminal()).cloned().collect();
        for t in open {
            let Some(arm) = Arm::from_json(&self.spec.space, &t.parameters) else { continue };
            let idx = t.index;
            if t.status == TrialStatus::Running {
                let pid = t.run_metadata.as_ref().and_then(|m| m.get("pid")).and_then(|p| p.as_u64());
                self.print(RunEvent::Reattached { index: idx, pid });
                self.dispatch(idx, arm, t.run_metadata.clone().or(Some(serde_json::Value::Null)), t.slot);
                continue;
            }
            // Recorded, not known to run: ask the runner what became of it.
            let job = TrialJob {
                index: idx,
                arm: arm.clone(),
                slot: 0,
                trial_dir: self.trial_dir(idx),
                attach: None,
                started_at: None,
                token: crate::exec::token(&self.store_id, idx),
                stored_points: 0,
            };
            match runner.unstarted(&job, t.status == TrialStatus::Staged) {
                Unstarted::Started(meta) => {
                    // It started, but optx stopped before recording that: record it now.
                    let pid = meta.get("pid").and_then(|p| p.as_u64());
                    self.mark_running(tx, idx, meta.clone(), None)?;
                    self.print(RunEvent::Reattached { index: idx, pid });
                    self.dispatch(idx, arm, Some(meta), t.slot);
                }
                Unstarted::Unknown(why) => {
                    // It may have started: it is lost and runs again.
                    let data = TransitionData { reason: Some(&why), lost: true, ..Default::default() };
                    tx.transition(idx, t.status, TrialStatus::Failed, &data)?;
                    let row = &mut self.trials[idx as usize];
                    row.status = TrialStatus::Failed;
                    row.lost = true;
                    self.nonlost -= 1;
                    self.release_arm(&t.arm_key);
                    self.reruns.push_back(Rerun { arm, of: idx, attempt: t.attempt, label: "rerun" });
                }
                Unstarted::Never => {
                    // It never ran and never will: deploy it now, as it is.
                    self.print(RunEvent::Deployed {
                        index: idx,
                        params: t.parameters.clone(),
                        generation: t.generation.clone(),
                    });
                    self.deployed_now += 1;
                    self.undeployed.insert(idx);
                    self.dispatch(idx, arm, None, None);
                }
            }
        }
        self.fill(tx)
    }
}

/// What a worker is given: one trial to run (or follow), or trials to deploy in one call.
enum Work {
    One(TrialJob, Receiver<Control>),
    Batch(Vec<TrialJob>),
}

/// The worker threads. Only the scheduler starts threads that run trials.
struct Pool {
    jobs: Receiver<Work>,
    events: Sender<RunnerEvent>,
    runner: Arc<dyn TrialRunner>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Start workers until there are `n`.
    fn grow_to(&mut self, n: usize) -> Result<(), String> {
        while self.workers.len() < n {
            let (jobs, events, runner) = (self.jobs.clone(), self.events.clone(), Arc::clone(&self.runner));
            let h = std::thread::Builder::new()
                .name(format!("optx-worker-{}", self.workers.len()))
                .spawn(move || {
                    for work in jobs {
                        match work {
                            Work::One(job, control) => runner.execute(job, &control, &events),
                            Work::Batch(batch) => runner.deploy_batch(batch, &events),
                        }
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            self.workers.push(h);
        }
        Ok(())
    }
}

struct Dispatcher<'a> {
    store: &'a mut Store,
    st: State<'a>,
    runner: Arc<dyn TrialRunner>,
    sink: &'a mut dyn EventSink,
    jobs: Sender<Work>,
    events: Receiver<RunnerEvent>,
    signals: u32,
    pool: Pool,
    parallelism: usize,
}

impl Dispatcher<'_> {
    /// Carry out what the committed transaction decided.
    fn act(&mut self) {
        let mut batch = Vec::new();
        for e in std::mem::take(&mut self.st.effects) {
            match e {
                Effect::Print(ev) => self.sink.event(&ev),
                Effect::Deploy(job) if self.st.interrupted.load(Ordering::SeqCst) => {
                    let msg = self.st.not_deployed(job.index);
                    self.sink.event(&RunEvent::Notice(msg));
                }
                Effect::Deploy(job) => batch.push(job),
                Effect::Dispatch(job, ctl) => {
                    if job.attach.is_none() && self.st.interrupted.load(Ordering::SeqCst) {
                        // Interrupted between its commit and now: it stays a candidate that
                        // has not started, which a resume deploys as it is.
                        let msg = self.st.not_deployed(job.index);
                        self.sink.event(&RunEvent::Notice(msg));
                        continue;
                    }
                    // Workers stuck for good in a runner's call are replaced, so that
                    // `parallelism` trials still run.
                    let want = self.parallelism + self.runner.stuck();
                    if let Err(e) = self.pool.grow_to(want) {
                        tracing::warn!("{e}");
                    }
                    let _ = self.jobs.send(Work::One(job, ctl));
                }
                Effect::Cleanup { index, failed } => self.runner.cleanup(&self.st.trial_dir(index), failed),
            }
        }
        if !batch.is_empty() {
            let _ = self.jobs.send(Work::Batch(batch));
        }
    }

    fn on_signal(&mut self) {
        self.signals += 1;
        let n = self.st.running.len();
        match self.signals {
            1 => {
                self.st.halt = Some((RunEnd::Interrupted, "interrupted".into()));
                let msg = if n > 0 {
                    format!("interrupted: deploying nothing more; waiting for {n} running trial(s) to finish (interrupt again to stop them)")
                } else {
                    "interrupted: deploying nothing more".into()
                };
                self.sink.event(&RunEvent::Notice(msg));
            }
            2 => {
                self.st.halt = Some((RunEnd::Interrupted, "interrupted".into()));
                self.sink.event(&RunEvent::Notice(format!(
                    "interrupted again: stopping {n} running trial(s); they will run again on `optx resume` (interrupt a third time to exit at once)"
                )));
                for r in self.st.running.values() {
                    let _ = r
                        .control
                        .send(Control::Stop { reason: "stopped by a second interrupt of optx".into(), lost: true });
                }
            }
            _ => {
                // Every commit so far is durable: the store is consistent.
                std::process::exit(130);
            }
        }
    }

    fn run(&mut self, deadline: Option<Instant>, signals: &Receiver<i32>) -> Result<RunEnd, store::StoreError> {
        let st = &mut self.st;
        let runner = Arc::clone(&self.runner);
        self.store.tx(|tx| st.reconcile(tx, runner.as_ref()))?;
        self.act();
        let timeout = deadline.map_or_else(never, crossbeam_channel::at);
        let events = self.events.clone();
        loop {
            if self.st.running.is_empty() {
                break;
            }
            let mut batch = Vec::new();
            select! {
                recv(events) -> ev => {
                    let Ok(ev) = ev else { break };
                    batch.push(ev);
                },
                recv(signals) -> _ => self.on_signal(),
                recv(timeout) -> _ => {
                    if self.st.halt.is_none() {
                        self.st.halt = Some((RunEnd::Done, "timeout_hours reached: `optx resume` continues the experiment".into()));
                        self.st.announce_halt();
                    }
                },
            }
            while let Ok(more) = events.try_recv() {
                batch.push(more);
            }
            let st = &mut self.st;
            self.store.tx(|tx| st.apply(tx, batch))?;
            self.act();
        }
        Ok(match &self.st.halt {
            Some((end, _)) => *end,
            None if self.st.interrupted.load(Ordering::SeqCst) => RunEnd::Interrupted,
            None => RunEnd::Done,
        })
    }
}

/// Rebuild the arms to re-run from the store: lost trials whose arm has not run again,
/// failed ones with retries left.
fn pending_reruns(spec: &ExperimentSpec, trials: &[Trial]) -> VecDeque<Rerun> {
    let rerun: BTreeSet<u64> = trials.iter().filter_map(|t| t.rerun_of).collect();
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Failed && !rerun.contains(&t.index))
        .filter_map(|t| {
            let arm = Arm::from_json(&spec.space, &t.parameters)?;
            if t.lost {
                Some(Rerun { arm, of: t.index, attempt: t.attempt, label: "rerun" })
            } else if t.attempt <= spec.orchestration.retries_per_failed_arm {
                Some(Rerun { arm, of: t.index, attempt: t.attempt + 1, label: "retry" })
            } else {
                None
            }
        })
        .collect()
}

/// Interrupts (SIGINT, SIGTERM) as the dispatcher sees them: each one as a message, which
/// it counts, and a flag set at once, which a proposal being computed checks.
pub(crate) struct Interrupts {
    pub signals: Receiver<i32>,
    pub flag: Arc<AtomicBool>,
}

/// Run the loop on an open, owned store. Returns how it ended.
pub(crate) fn drive(
    spec: &ExperimentSpec,
    store: &mut Store,
    runner: Arc<dyn TrialRunner>,
    seed: u64,
    session: i64,
    sink: &mut dyn EventSink,
    interrupts: &Interrupts,
) -> Result<RunEnd, store::StoreError> {
    let (signals, interrupted) = (&interrupts.signals, Arc::clone(&interrupts.flag));
    let trials = store.trials()?;
    let store_id = store.id()?;
    let open: Vec<u64> = trials.iter().filter(|t| t.status == TrialStatus::Running).map(|t| t.index).collect();
    let stored_points = store.curve_points(&open)?;
    let state: GenState =
        store.generator_state("sequence")?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    let mut taken = HashMap::new();
    for t in trials.iter().filter(|t| !t.lost && t.status != TrialStatus::Failed) {
        *taken.entry(t.arm_key.clone()).or_insert(0) += 1;
    }
    let finals = crate::domain::final_values(&store.final_observations()?);
    let best = crate::domain::best_trials(&spec.goal, &trials, &finals);
    let cost: f64 = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(|t| finals.get(&t.index).and_then(|m| m.get("cost")).map(|o| o.mean))
        .sum();
    let parallelism = spec.orchestration.parallelism;
    let attach = trials.iter().filter(|t| !t.status.is_terminal()).count();
    let (jobs_tx, jobs_rx) = unbounded::<Work>();
    let (events_tx, events_rx) = unbounded();
    let mut pool = Pool { jobs: jobs_rx, events: events_tx, runner: Arc::clone(&runner), workers: Vec::new() };
    pool.grow_to(parallelism.max(attach).max(1)).map_err(store::StoreError::Other)?;
    let nonlost = trials.iter().filter(|t| !t.lost).count() as u64;
    let reruns = pending_reruns(spec, &trials);
    let mut generator = Generator::new(spec, seed, state);
    let learns = generator.learns();
    for t in trials.iter().filter(|_| learns) {
        let Some(arm) = Arm::from_json(&spec.space, &t.parameters) else { continue };
        if t.status == TrialStatus::Completed {
            let values = finals.get(&t.index).map(|m| m.iter().map(|(k, o)| (k.clone(), (o.mean, o.sem))).collect());
            generator.observe(t.index, &arm, values.unwrap_or_default());
        } else if !t.status.is_terminal() {
            generator.pending(t.index, &arm);
        }
    }
    let mut trials = trials;
    for t in trials.iter_mut().filter(|t| t.status.is_terminal()) {
        t.shrink();
    }
    let st = State {
        spec,
        generator,
        session,
        reruns,
        trials,
        taken,
        running: HashMap::new(),
        free_slots: (0..parallelism).collect(),
        deployed_now: 0,
        failed_now: 0,
        best,
        cost,
        halt: None,
        exhausted: false,
        nonlost,
        undeployed: BTreeSet::new(),
        effects: Vec::new(),
        trials_root: spec.trials_root(),
        lost_now: 0,
        lost_streak: 0,
        store_id,
        stored_points,
        interrupted,
    };
    let mut d = Dispatcher {
        store,
        st,
        runner: Arc::clone(&runner),
        sink,
        jobs: jobs_tx,
        events: events_rx,
        signals: 0,
        pool,
        parallelism: parallelism.max(1),
    };
    let deadline = spec.orchestration.timeout_hours.map(|h| Instant::now() + Duration::from_secs_f64(h * 3600.0));
    let end = d.run(deadline, signals);
    let workers = std::mem::take(&mut d.pool.workers);
    drop(d);
    // A worker stuck in a call that never returns (a plugin's) cannot be joined: leave it.
    if end.is_ok() && runner.stuck() == 0 {
        for w in workers {
            let _ = w.join();
        }
        runner.close();
    } else if end.is_ok() {
        runner.close();
    }
    // On an error optx exits without waiting: running trials go on under the shepherd,
    // which records how they end, and `optx resume` reconciles them.
    end
}

#[cfg(test)]
mod tests {
    //! The scheduler with a fake runner: accounting without processes.

    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::runners::{MetricPoint, TrialResult};

    /// What the fake does with a trial: complete with f = x, fail, or lose it.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Fate {
        Complete,
        Fail,
        Lose,
    }

    struct FakeRunner {
        /// Decides from the trial index, how many trials ran before it, and its x.
        fate: Box<dyn Fn(u64, usize, f64) -> Fate + Send + Sync>,
        calls: Mutex<usize>,
    }

    impl TrialRunner for FakeRunner {
        fn execute(&self, job: TrialJob, _control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
            let n = {
                let mut c = self.calls.lock().unwrap();
                *c += 1;
                *c - 1
            };
            let _ =
                events.send(RunnerEvent::Deployed { index: job.index, run_metadata: serde_json::json!({"fake": n}) });
            let x = job.arm.get("x").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let f = MetricPoint { metric: "f".into(), progression: None, mean: x, sem: None };
            let outcome = match (self.fate)(job.index, n, x) {
                Fate::Complete => Outcome::Completed,
                Fate::Fail => Outcome::Failed { reason: "fake failure".into(), lost: false },
                Fate::Lose => Outcome::Failed { reason: "fake loss".into(), lost: true },
            };
            let finals = if outcome == Outcome::Completed { vec![f] } else { vec![] };
            let result = TrialResult { outcome, finals, curve: vec![], stop_metadata: None, note: None };
            let _ = events.send(RunnerEvent::Finished { index: job.index, result });
        }
        fn cleanup(&self, _: &Path, _: bool) {}
        fn close(&self) {}
    }

    #[derive(Default)]
    struct Sink(Vec<RunEvent>);

    impl EventSink for Sink {
        fn event(&mut self, e: &RunEvent) {
            self.0.push(e.clone());
        }
    }

    fn spec(dir: &Path, orchestration: &str) -> ExperimentSpec {
        let src = format!(
            "[experiment]\nname = \"fake\"\n[parameters]\nx = {{ type = \"float\", bounds = [0.0, 1.0] }}\n\
             [objective]\nminimize = \"f\"\n[runner]\ncommand = \"true\"\n[orchestration]\n{orchestration}\n"
        );
        crate::config::parse(&src, "fake.toml", dir).unwrap()
    }

    fn run(
        spec: &ExperimentSpec,
        store: &mut Store,
        fate: impl Fn(u64, usize, f64) -> Fate + Send + Sync + 'static,
    ) -> (RunEnd, Vec<RunEvent>) {
        let runner = Arc::new(FakeRunner { fate: Box::new(fate), calls: Mutex::new(0) });
        let mut sink = Sink::default();
        let (_tx, signals) = unbounded();
        let interrupts = Interrupts { signals, flag: Arc::default() };
        let end = drive(spec, store, runner, 42, 1, &mut sink, &interrupts).unwrap();
        (end, sink.0)
    }

    fn setup(orchestration: &str) -> (tempfile::TempDir, ExperimentSpec, Store) {
        let d = tempfile::tempdir().unwrap();
        let spec = spec(d.path(), orchestration);
        let store = Store::open(&spec.store_path, spec.durability).unwrap();
        (d, spec, store)
    }

    #[test]
    fn a_run_ends_with_max_trials_completed_and_the_best_found() {
        let (_d, spec, mut store) = setup("max_trials = 7\nparallelism = 3");
        let (end, events) = run(&spec, &mut store, |_, _, _| Fate::Complete);
        assert_eq!(end, RunEnd::Done);
        let trials = store.trials().unwrap();
        assert_eq!(trials.len(), 7);
        assert!(trials.iter().all(|t| t.status == TrialStatus::Completed && t.feasible == Some(true)));
        let best = store.best(&spec.goal).unwrap();
        let min = trials.iter().map(|t| t.parameters["x"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].1, vec![min]);
        let announced = events.iter().filter(|e| matches!(e, RunEvent::Completed { best: true, .. })).count();
        assert!(announced >= 1);
    }

    #[test]
    fn lost_trials_do_not_count_and_their_arms_run_again() {
        let (_d, spec, mut store) = setup("max_trials = 5\nparallelism = 1");
        // The first deployment of trial 1 is lost.
        let (end, _) = run(&spec, &mut store, |i, n, _| if i == 1 && n == 1 { Fate::Lose } else { Fate::Complete });
        assert_eq!(end, RunEnd::Done);
        let trials = store.trials().unwrap();
        assert_eq!(trials.len(), 6);
        assert_eq!(trials.iter().filter(|t| !t.lost).count(), 5);
        let rerun = trials.iter().find(|t| t.rerun_of == Some(1)).unwrap();
        assert_eq!(rerun.generation, "rerun");
        assert_eq!(rerun.parameters, trials[1].parameters);
        assert_eq!(rerun.status, TrialStatus::Completed);
    }

    #[test]
    fn retries_are_real_trials_that_count() {
        let (_d, spec, mut store) =
            setup("max_trials = 4\nretries_per_failed_arm = 2\ntolerated_trial_failure_rate = 1.0");
        // The center arm (x = 0.5, trial 0) always fails: it runs three times in all.
        let (end, _) = run(&spec, &mut store, |_, _, x| if x == 0.5 { Fate::Fail } else { Fate::Complete });
        assert_eq!(end, RunEnd::Done);
        let trials = store.trials().unwrap();
        assert_eq!(trials.len(), 4, "retries count toward max_trials");
        assert_eq!(
            trials.iter().map(|t| t.generation.as_str()).collect::<Vec<_>>(),
            ["center", "retry", "retry", "sobol"]
        );
        assert_eq!(trials.iter().map(|t| t.attempt).collect::<Vec<_>>(), [1, 2, 3, 1]);
        assert_eq!((trials[1].rerun_of, trials[2].rerun_of), (Some(0), Some(1)));
        assert!(trials[..3].iter().all(|t| t.status == TrialStatus::Failed && !t.lost));
        assert_eq!(trials[3].status, TrialStatus::Completed);
    }

    #[test]
    fn too_many_failures_end_the_run_early() {
        let (_d, spec, mut store) =
            setup("max_trials = 50\nparallelism = 2\nmin_failed_trials_for_failure_rate_check = 4");
        let (end, events) = run(&spec, &mut store, |_, _, _| Fate::Fail);
        assert_eq!(end, RunEnd::FailureRate);
        let n = store.trials().unwrap().len();
        assert!((4..=6).contains(&n), "{n}");
        assert!(events.iter().any(|e| matches!(e, RunEvent::Notice(m) if m.contains("tolerated_trial_failure_rate"))));
    }

    #[test]
    fn a_resumed_run_proposes_what_an_uninterrupted_one_would() {
        let (_d, spec, mut store) = setup("max_trials = 8");
        run(&spec, &mut store, |_, _, _| Fate::Complete);
        let whole: Vec<serde_json::Value> = store.trials().unwrap().into_iter().map(|t| t.parameters).collect();

        let (_d2, mut spec2, mut store2) = setup("max_trials = 3");
        run(&spec2, &mut store2, |_, _, _| Fate::Complete);
        spec2.orchestration.max_trials = 8;
        run(&spec2, &mut store2, |_, _, _| Fate::Complete);
        let parts: Vec<serde_json::Value> = store2.trials().unwrap().into_iter().map(|t| t.parameters).collect();
        assert_eq!(parts, whole);
    }
}
