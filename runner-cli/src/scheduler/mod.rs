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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, unbounded, Receiver, Sender};

pub use launch::{launch, Launch, RunError};

use crate::domain::{Arm, ExperimentSpec, Observation, OutcomeConstraint, Trial, TrialStatus};
use crate::generate::{GenState, Generator};
use crate::runners::{Control, Outcome, RunnerEvent, TrialJob, TrialRunner};
use crate::store::{self, NewTrial, Store, TransitionData};

/// What the run tells whoever watches it (the CLI prints these).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Started { name: String, store: PathBuf, max_trials: u64, parallelism: usize, method: String, existing: u64 },
    Reattached { index: u64, pid: Option<u64> },
    Deployed { index: u64, params: serde_json::Value, generation: String },
    Completed { index: u64, metric: String, value: Option<f64>, feasible: bool, best: bool, note: Option<String> },
    Failed { index: u64, reason: String, lost: bool, will_retry: bool },
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
    /// Ctrl-C or SIGTERM: state saved, resumable.
    Interrupted,
}

struct Running {
    control: Sender<Control>,
    slot: usize,
}

/// An arm to run again as a new trial: a retry of a failed arm or a re-run of a lost one.
struct Rerun {
    arm: Arm,
    of: u64,
    attempt: u32,
    label: &'static str,
}

struct Dispatcher<'a> {
    spec: &'a ExperimentSpec,
    store: &'a mut Store,
    runner: Arc<dyn TrialRunner>,
    sink: &'a mut dyn EventSink,
    generator: Generator<'a>,
    session: i64,
    trials: Vec<Trial>,
    /// Arms deployed and neither lost nor failed: never proposed again.
    taken: HashMap<String, u32>,
    reruns: VecDeque<Rerun>,
    running: HashMap<u64, Running>,
    free_slots: BTreeSet<usize>,
    jobs: Sender<(TrialJob, Receiver<Control>)>,
    events: Receiver<RunnerEvent>,
    /// This session's counts for the failure rate.
    deployed_now: u64,
    failed_now: u64,
    best: Option<(u64, f64)>,
    cost: f64,
    signals: u32,
    /// Why deployment stopped, if it did.
    halt: Option<(RunEnd, String)>,
    exhausted: bool,
}

fn objective_of(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> Option<f64> {
    finals.iter().find(|p| p.metric == spec.objective.metric).map(|p| p.mean)
}

fn feasible(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> bool {
    let values = finals.iter().map(|p| (p.metric.clone(), p.mean)).collect();
    OutcomeConstraint::all_satisfied(&spec.outcome_constraints, &values)
}

impl<'a> Dispatcher<'a> {
    fn nonlost(&self) -> u64 {
        self.trials.iter().filter(|t| !t.lost).count() as u64
    }

    fn trial_dir(&self, index: u64) -> PathBuf {
        self.spec.trials_root().join(index.to_string())
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

    fn pending_candidates(&self) -> usize {
        self.trials.iter().filter(|t| t.status == TrialStatus::Candidate && self.running.contains_key(&t.index)).count()
    }

    /// Deploy new trials while there is room, budget and no reason to stop.
    fn fill(&mut self) -> Result<(), store::StoreError> {
        let o = &self.spec.orchestration;
        let max_pending = o.max_pending_trials.unwrap_or(o.parallelism).max(1);
        while self.halt.is_none()
            && !self.exhausted
            && self.running.len() < o.parallelism
            && self.nonlost() < o.max_trials
            && self.pending_candidates() < max_pending
        {
            let (arm, generation, rerun_of, attempt) = match self.reruns.pop_front() {
                Some(r) => (r.arm, r.label.to_string(), Some(r.of), r.attempt),
                None => {
                    let taken = &self.taken;
                    match self.generator.next(&|k| taken.contains_key(k)) {
                        Ok(p) => (p.arm, p.method.to_string(), None, 1),
                        Err(e) => {
                            self.exhausted = true;
                            self.sink.event(&RunEvent::Notice(format!("{e}; no more trials will be deployed")));
                            break;
                        }
                    }
                }
            };
            let index = self.trials.len() as u64;
            let params = arm.to_json();
            let key = arm.key();
            let state = serde_json::to_value(&self.generator.state).unwrap_or_default();
            let session = self.session;
            self.store.tx(|tx| {
                tx.insert_trial(&NewTrial {
                    index,
                    arm_key: &key,
                    parameters: &params,
                    generation: &generation,
                    rerun_of,
                    attempt,
                    session,
                })?;
                tx.set_generator_state("sequence", &state)
            })?;
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
                created_at: store::now(),
                staged_at: None,
                started_at: None,
                completed_at: None,
            });
            self.take_arm(&key);
            self.deployed_now += 1;
            self.sink.event(&RunEvent::Deployed { index, params, generation });
            self.dispatch(index, arm, None, None);
        }
        Ok(())
    }

    fn dispatch(&mut self, index: u64, arm: Arm, attach: Option<serde_json::Value>, slot: Option<usize>) {
        let slot = match slot.filter(|s| self.free_slots.remove(s)) {
            Some(s) => s,
            None => self.free_slots.pop_first().unwrap_or(self.running.len()),
        };
        let started_at = self.trials[index as usize].started_at.as_deref().and_then(store::parse_time);
        let (ctl_tx, ctl_rx) = unbounded();
        let job = TrialJob { index, arm, slot, trial_dir: self.trial_dir(index), attach, started_at };
        self.running.insert(index, Running { control: ctl_tx, slot });
        let _ = self.jobs.send((job, ctl_rx));
    }

    /// Commit a batch of worker events, then report and act on them.
    fn apply(&mut self, batch: Vec<RunnerEvent>) -> Result<(), store::StoreError> {
        let spec = self.spec;
        let trials = &mut self.trials;
        let running = &self.running;
        let mut after: Vec<RunnerEvent> = Vec::new();
        self.store.tx(|tx| {
            for ev in batch {
                match &ev {
                    RunnerEvent::Deployed { index, run_metadata } => {
                        let t = &mut trials[*index as usize];
                        let dir = run_metadata.get("trial_dir").and_then(|d| d.as_str()).map(str::to_string);
                        let slot = running.get(index).map(|r| r.slot);
                        let data = TransitionData {
                            run_metadata: Some(run_metadata),
                            slot,
                            trial_dir: dir.as_deref(),
                            ..Default::default()
                        };
                        if t.status == TrialStatus::Candidate {
                            tx.transition(*index, TrialStatus::Candidate, TrialStatus::Staged, &data)?;
                            t.status = TrialStatus::Staged;
                        }
                        tx.transition(*index, TrialStatus::Staged, TrialStatus::Running, &data)?;
                        t.status = TrialStatus::Running;
                        t.started_at = Some(tx.time().to_string());
                        t.run_metadata = Some(run_metadata.clone());
                    }
                    RunnerEvent::Progress { index, points } => {
                        for p in points.iter().filter(|p| p.mean.is_finite()) {
                            tx.observation(&Observation {
                                trial: *index,
                                metric: p.metric.clone(),
                                progression: p.progression,
                                mean: p.mean,
                                sem: p.sem,
                                is_final: false,
                            })?;
                        }
                    }
                    RunnerEvent::Finished { index, result } => {
                        let t = &mut trials[*index as usize];
                        // SQLite has no NaN (it would be NULL): a non-finite value is kept
                        // in the failure reason, not as an observation.
                        for p in result.curve.iter().filter(|p| p.mean.is_finite()) {
                            tx.observation(&Observation {
                                trial: *index,
                                metric: p.metric.clone(),
                                progression: p.progression,
                                mean: p.mean,
                                sem: p.sem,
                                is_final: false,
                            })?;
                        }
                        for p in result.finals.iter().filter(|p| p.mean.is_finite()) {
                            tx.observation(&Observation {
                                trial: *index,
                                metric: p.metric.clone(),
                                progression: p.progression,
                                mean: p.mean,
                                sem: p.sem,
                                is_final: true,
                            })?;
                        }
                        let (to, reason, lost, feas) = match &result.outcome {
                            Outcome::Completed => (
                                TrialStatus::Completed,
                                result.note.clone(),
                                false,
                                Some(feasible(spec, &result.finals)),
                            ),
                            Outcome::Failed { reason, lost } => {
                                (TrialStatus::Failed, Some(reason.clone()), *lost, None)
                            }
                        };
                        // A trial that never started fails straight from CANDIDATE/STAGED.
                        let data = TransitionData {
                            reason: reason.as_deref(),
                            lost,
                            feasible: feas,
                            stop_metadata: result.stop_metadata.as_ref(),
                            ..Default::default()
                        };
                        tx.transition(*index, t.status, to, &data)?;
                        t.status = to;
                        t.lost = lost;
                        t.reason = reason;
                        t.feasible = feas;
                        t.completed_at = Some(tx.time().to_string());
                    }
                }
                after.push(ev);
            }
            Ok(())
        })?;
        for ev in after {
            self.after_commit(ev);
        }
        Ok(())
    }

    /// Report and act on a committed event.
    fn after_commit(&mut self, ev: RunnerEvent) {
        let RunnerEvent::Finished { index, result } = ev else { return };
        let Some(r) = self.running.remove(&index) else { return };
        self.free_slots.insert(r.slot);
        let t = self.trials[index as usize].clone();
        let arm = Arm::from_json(&self.spec.space, &t.parameters);
        match &result.outcome {
            Outcome::Completed => {
                let value = objective_of(self.spec, &result.finals);
                let feas = t.feasible.unwrap_or(false);
                let mut best = false;
                if let (Some(v), true) = (value, feas) {
                    if self.best.is_none_or(|(_, b)| self.spec.objective.better(v, b)) {
                        self.best = Some((index, v));
                        best = true;
                    }
                }
                self.cost += result.finals.iter().find(|p| p.metric == "cost").map_or(0.0, |p| p.mean);
                self.sink.event(&RunEvent::Completed {
                    index,
                    metric: self.spec.objective.metric.clone(),
                    value,
                    feasible: feas,
                    best,
                    note: result.note.clone(),
                });
                self.runner.cleanup(&self.trial_dir(index), false);
                if let Some(max) = self.spec.orchestration.max_cost {
                    if self.cost >= max && self.halt.is_none() {
                        self.halt =
                            Some((RunEnd::Done, format!("the cost budget is spent ({} >= max_cost {max})", self.cost)));
                        self.announce_halt();
                    }
                }
            }
            Outcome::Failed { reason, lost } => {
                self.release_arm(&t.arm_key);
                let retry = !lost && t.attempt <= self.spec.orchestration.retries_per_failed_arm;
                if let Some(arm) = arm {
                    if *lost {
                        self.reruns.push_back(Rerun { arm, of: index, attempt: t.attempt, label: "rerun" });
                    } else if retry {
                        self.reruns.push_back(Rerun { arm, of: index, attempt: t.attempt + 1, label: "retry" });
                    }
                }
                self.sink.event(&RunEvent::Failed { index, reason: reason.clone(), lost: *lost, will_retry: retry });
                self.runner.cleanup(&self.trial_dir(index), true);
                if !lost && t.session == self.session {
                    self.failed_now += 1;
                    self.check_failure_rate();
                }
            }
        }
    }

    fn check_failure_rate(&mut self) {
        let o = &self.spec.orchestration;
        let lost_now = self.trials.iter().filter(|t| t.session == self.session && t.lost).count() as u64;
        let deployed = self.deployed_now.saturating_sub(lost_now).max(1);
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

    fn announce_halt(&mut self) {
        if let Some((_, why)) = &self.halt {
            let n = self.running.len();
            let wait = if n > 0 { format!("; waiting for {n} running trial(s)") } else { String::new() };
            self.sink.event(&RunEvent::Notice(format!("{why}{wait}")));
        }
    }

    fn on_signal(&mut self) {
        self.signals += 1;
        match self.signals {
            1 => {
                let n = self.running.len();
                self.halt = Some((RunEnd::Interrupted, "interrupted".into()));
                let msg = if n > 0 {
                    format!("interrupted: deploying nothing more; waiting for {n} running trial(s) to finish (interrupt again to stop them)")
                } else {
                    "interrupted: deploying nothing more".into()
                };
                self.sink.event(&RunEvent::Notice(msg));
            }
            2 => {
                self.halt = Some((RunEnd::Interrupted, "interrupted".into()));
                self.sink.event(&RunEvent::Notice(format!(
                    "interrupted again: stopping {} running trial(s); they will run again on `optx resume` (interrupt a third time to exit at once)",
                    self.running.len()
                )));
                for r in self.running.values() {
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

    /// Reconcile trials that were not finished when optx last stopped.
    fn reconcile(&mut self) -> Result<(), store::StoreError> {
        let open: Vec<Trial> = self.trials.iter().filter(|t| !t.status.is_terminal()).cloned().collect();
        for t in open {
            let dir = self.trial_dir(t.index);
            let Some(arm) = Arm::from_json(&self.spec.space, &t.parameters) else { continue };
            let ran = crate::exec::read_run_info(&dir);
            match (t.status, ran) {
                (TrialStatus::Running, _) => {
                    let pid = t.run_metadata.as_ref().and_then(|m| m.get("pid")).and_then(|p| p.as_u64());
                    self.sink.event(&RunEvent::Reattached { index: t.index, pid });
                    self.dispatch(t.index, arm, t.run_metadata.clone().or(Some(serde_json::Value::Null)), t.slot);
                }
                (TrialStatus::Candidate | TrialStatus::Staged, Some(info)) => {
                    // It started but optx stopped before recording it: record it now.
                    let meta = serde_json::json!({"pid": info.pid, "start": info.start, "trial_dir": dir});
                    let from = t.status;
                    let idx = t.index;
                    self.store.tx(|tx| {
                        let data = TransitionData { run_metadata: Some(&meta), ..Default::default() };
                        if from == TrialStatus::Candidate {
                            tx.transition(idx, TrialStatus::Candidate, TrialStatus::Staged, &data)?;
                        }
                        tx.transition(idx, TrialStatus::Staged, TrialStatus::Running, &data)
                    })?;
                    let row = &mut self.trials[idx as usize];
                    row.status = TrialStatus::Running;
                    row.run_metadata = Some(meta.clone());
                    row.started_at = Some(store::now());
                    self.sink.event(&RunEvent::Reattached { index: idx, pid: Some(info.pid as u64) });
                    self.dispatch(idx, arm, Some(meta), t.slot);
                }
                (TrialStatus::Candidate | TrialStatus::Staged, None) => {
                    // Never started: deploy it now, as it is.
                    let _ = std::fs::remove_dir_all(&dir);
                    if t.status == TrialStatus::Staged {
                        // A staged trial without a process: deploy it afresh from CANDIDATE's
                        // point of view is not a legal transition, so fail it as lost.
                        let idx = t.index;
                        self.store.tx(|tx| {
                            let data = TransitionData {
                                reason: Some("optx stopped while deploying this trial"),
                                lost: true,
                                ..Default::default()
                            };
                            tx.transition(idx, TrialStatus::Staged, TrialStatus::Failed, &data)
                        })?;
                        let row = &mut self.trials[idx as usize];
                        row.status = TrialStatus::Failed;
                        row.lost = true;
                        self.release_arm(&t.arm_key);
                        self.reruns.push_back(Rerun { arm, of: idx, attempt: t.attempt, label: "rerun" });
                    } else {
                        self.sink.event(&RunEvent::Deployed {
                            index: t.index,
                            params: t.parameters.clone(),
                            generation: t.generation.clone(),
                        });
                        self.deployed_now += 1;
                        self.dispatch(t.index, arm, None, None);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run(&mut self, deadline: Option<Instant>, signals: &Receiver<i32>) -> Result<RunEnd, store::StoreError> {
        self.reconcile()?;
        let timeout = deadline.map_or_else(never, crossbeam_channel::at);
        let events = self.events.clone();
        loop {
            self.fill()?;
            if self.running.is_empty() {
                break;
            }
            select! {
                recv(events) -> ev => {
                    let Ok(ev) = ev else { break };
                    let mut batch = vec![ev];
                    while let Ok(more) = events.try_recv() {
                        batch.push(more);
                    }
                    self.apply(batch)?;
                },
                recv(signals) -> _ => self.on_signal(),
                recv(timeout) -> _ => {
                    if self.halt.is_none() {
                        self.halt = Some((RunEnd::Done, "timeout_hours reached: `optx resume` continues the experiment".into()));
                        self.announce_halt();
                    }
                },
            }
        }
        Ok(match &self.halt {
            Some((end, _)) => *end,
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

/// Run the loop on an open, owned store. Returns how it ended.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive(
    spec: &ExperimentSpec,
    store: &mut Store,
    runner: Arc<dyn TrialRunner>,
    seed: u64,
    session: i64,
    sink: &mut dyn EventSink,
    signals: &Receiver<i32>,
) -> Result<RunEnd, store::StoreError> {
    let trials = store.trials()?;
    let state: GenState =
        store.generator_state("sequence")?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    let mut taken = HashMap::new();
    for t in trials.iter().filter(|t| !t.lost && t.status != TrialStatus::Failed) {
        *taken.entry(t.arm_key.clone()).or_insert(0) += 1;
    }
    let finals = crate::domain::final_values(&store.observations()?);
    let best = crate::domain::best_trial(&spec.objective, &trials, &finals);
    let cost: f64 = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(|t| finals.get(&t.index).and_then(|m| m.get("cost")).map(|o| o.mean))
        .sum();
    let parallelism = spec.orchestration.parallelism;
    let attach = trials.iter().filter(|t| !t.status.is_terminal()).count();
    let (jobs_tx, jobs_rx) = unbounded::<(TrialJob, Receiver<Control>)>();
    let (events_tx, events_rx) = unbounded();
    let mut workers = Vec::new();
    for i in 0..parallelism.max(attach).max(1) {
        let jobs = jobs_rx.clone();
        let events = events_tx.clone();
        let runner = Arc::clone(&runner);
        let h = std::thread::Builder::new()
            .name(format!("optx-worker-{i}"))
            .spawn(move || {
                for (job, control) in jobs {
                    runner.execute(job, &control, &events);
                }
            })
            .map_err(|e| store::StoreError::Other(format!("cannot start a worker thread: {e}")))?;
        workers.push(h);
    }
    drop(events_tx);
    let mut d = Dispatcher {
        spec,
        store,
        runner: Arc::clone(&runner),
        sink,
        generator: Generator::new(spec, seed, state),
        session,
        reruns: pending_reruns(spec, &trials),
        trials,
        taken,
        running: HashMap::new(),
        free_slots: (0..parallelism).collect(),
        jobs: jobs_tx,
        events: events_rx,
        deployed_now: 0,
        failed_now: 0,
        best,
        cost,
        signals: 0,
        halt: None,
        exhausted: false,
    };
    let deadline = spec.orchestration.timeout_hours.map(|h| Instant::now() + Duration::from_secs_f64(h * 3600.0));
    let end = d.run(deadline, signals);
    drop(d);
    for w in workers {
        let _ = w.join();
    }
    runner.close();
    end
}
