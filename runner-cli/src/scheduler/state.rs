//! The run state of one dispatcher: the trials it knows, the arms taken, the running
//! trials and their slots, the accounting of this session, and why deployment stopped. It
//! changes only inside a store transaction, which also records the change; what it leads
//! to (printing, deploying) waits for the commit as [`Effect`]s.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::stop::{self, Stop};
use super::RunEvent;
use crate::domain::{Arm, ExperimentSpec, Observation, OutcomeConstraint, Trial, TrialStatus};
use crate::generate::Generator;
use crate::runners::{Control, ControlTx, Outcome, RunnerEvent, TrialJob};
use crate::store::{self, NewTrial, TransitionData, Tx};

pub(super) struct Running {
    pub(super) control: ControlTx,
    pub(super) slot: usize,
    /// A trial deployed in a batch: the job that follows it once its deployment is committed.
    pub(super) follow: Option<(TrialJob, Receiver<Control>)>,
}

/// An arm to run again as a new trial: a retry of a failed arm or a re-run of a lost one.
pub(super) struct Rerun {
    pub(super) arm: Arm,
    pub(super) of: u64,
    pub(super) attempt: u32,
    pub(super) label: &'static str,
}

/// A trial just created: its index, its arm (as the store holds it) and how it came.
/// The early-stopping rule's decision on a trial that has not ended yet.
#[derive(Debug, Clone)]
pub(super) struct Stopped {
    pub reason: String,
    /// The trial's latest progression when the rule decided.
    pub progression: f64,
    /// When, and on which point (trial, progression) that had just arrived.
    pub decided_at: String,
    pub trigger: (u64, f64),
    /// The points it reported since (they count only if it ends otherwise than stopped).
    pub held: Vec<(f64, f64)>,
}

impl Stopped {
    /// What the trial's `stop_metadata` keeps: the decision, beside what the runner said
    /// of the stop (under `runner` unless it is an object already).
    pub fn metadata(&self, runner: Option<&serde_json::Value>) -> serde_json::Value {
        let decision = serde_json::json!({
            "progression": self.progression,
            "decided_at": self.decided_at,
            "trigger": { "trial": self.trigger.0, "progression": self.trigger.1 },
        });
        let mut meta = match runner {
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(v) => serde_json::Map::from_iter([("runner".to_string(), v.clone())]),
            None => serde_json::Map::new(),
        };
        meta.insert("early_stopping".into(), decision);
        serde_json::Value::Object(meta)
    }
}

pub(super) struct NewArm {
    pub index: u64,
    pub arm: Arm,
    pub params: serde_json::Value,
    pub generation: String,
}

/// What the dispatcher does once a transaction has committed.
pub(super) enum Effect {
    Print(RunEvent),
    Dispatch(TrialJob, Receiver<Control>),
    /// Deploy with the other `Deploy`s of this wake-up in one runner call
    /// (`run_trials_in_batches`).
    Deploy(TrialJob),
    Cleanup {
        index: u64,
        failed: bool,
    },
    /// Stop a running trial (the early-stopping rule said so).
    Stop {
        index: u64,
        reason: String,
    },
}

/// The run state. It changes only inside a store transaction, which also records the
/// change; what it leads to (printing, deploying) waits for the commit as [`Effect`]s.
pub(super) struct State<'a> {
    pub(super) spec: &'a ExperimentSpec,
    pub(super) generator: Generator<'a>,
    pub(super) session: i64,
    pub(super) trials: Vec<Trial>,
    /// Arms deployed and neither lost nor failed: never proposed again.
    pub(super) taken: HashMap<String, u32>,
    pub(super) reruns: VecDeque<Rerun>,
    pub(super) running: HashMap<u64, Running>,
    pub(super) free_slots: BTreeSet<usize>,
    /// This session's counts for the failure rate.
    pub(super) deployed_now: u64,
    pub(super) failed_now: u64,
    /// The best trial so far, or the Pareto front.
    pub(super) best: Vec<crate::domain::Point>,
    pub(super) cost: f64,
    /// Why deployment stopped, if it did.
    pub(super) halt: Option<Stop>,
    pub(super) exhausted: bool,
    /// Trials that are not lost (a count: the budget is checked per deployment).
    pub(super) nonlost: u64,
    /// Candidates handed to a worker and not deployed yet.
    pub(super) undeployed: BTreeSet<u64>,
    pub(super) effects: Vec<Effect>,
    /// `<store name>.trials/`, where every trial dir goes.
    pub(super) trials_root: PathBuf,
    /// Trials of this session that were lost (the failure rate leaves them out).
    pub(super) lost_now: u64,
    /// Trials of this session lost one after the other, with no other end between them.
    pub(super) lost_streak: u64,
    /// The store's identity, in the token of every trial's records.
    pub(super) store_id: String,
    /// Points of learning curves stored for each trial that was running (to re-attach).
    pub(super) stored_points: HashMap<u64, usize>,
    /// Set by the signal thread as soon as an interrupt arrives, before the dispatcher
    /// reads it: a proposal that was being computed is then not deployed.
    pub(super) interrupted: Arc<AtomicBool>,
    /// The newest event of the store this state has read (the change feed's cursor).
    pub(super) cursor: i64,
    /// Trials this worker created (for `--max-trials-per-worker`).
    pub(super) created_now: u64,
    /// The runner's wake-up for its driver loop, given to every trial's control channel.
    pub(super) waker: Option<Sender<()>>,
    /// `[early_stopping]`: the rule, the curves of its metric (every trial's), and the
    /// trials it stopped that have not ended yet, with its decision.
    pub(super) early: Option<crate::stopping::Checker>,
    pub(super) curves: crate::stopping::Curves,
    pub(super) stopping: HashMap<u64, Stopped>,
    /// The objective of each completed, feasible trial, in the order they completed.
    pub(super) completed: Vec<f64>,
    /// This session's failed trials (not lost) and their reasons, for the failure-rate stop.
    pub(super) failures: Vec<(u64, String)>,
    /// Whether the user was told that no learning curve arrives for early stopping.
    pub(super) said_no_curve: bool,
}

/// Each objective's value from a trial's final metrics.
/// The key that marks a point of a learning curve.
fn progression_key(spec: &ExperimentSpec) -> &str {
    match &spec.runner {
        crate::domain::RunnerSpec::Command(c) => &c.progression,
        crate::domain::RunnerSpec::External(e) => &e.progression,
        crate::domain::RunnerSpec::Plugin(_) => "step",
    }
}

pub(super) fn objective_values(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> Vec<Option<f64>> {
    let metric = |m: &str| finals.iter().find(|p| p.metric == m).map(|p| p.mean);
    spec.goal.objectives.iter().map(|o| o.value(metric)).collect()
}

pub(super) fn feasible(spec: &ExperimentSpec, finals: &[crate::runners::MetricPoint]) -> bool {
    let values = finals.iter().map(|p| (p.metric.clone(), p.mean)).collect();
    OutcomeConstraint::all_satisfied(&spec.outcome_constraints, &values)
}

pub(super) fn observation(trial: u64, p: &crate::runners::MetricPoint, is_final: bool) -> Observation {
    Observation { trial, metric: p.metric.clone(), progression: p.progression, mean: p.mean, sem: p.sem, is_final }
}

impl<'a> State<'a> {
    pub(super) fn trial_dir(&self, index: u64) -> PathBuf {
        self.trials_root.join(index.to_string())
    }

    pub(super) fn take_arm(&mut self, key: &str) {
        *self.taken.entry(key.to_string()).or_default() += 1;
    }

    pub(super) fn release_arm(&mut self, key: &str) {
        if let Some(n) = self.taken.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.taken.remove(key);
            }
        }
    }

    pub(super) fn print(&mut self, e: RunEvent) {
        self.effects.push(Effect::Print(e));
    }

    /// Every trial this dispatcher runs is deployed and recorded with its run metadata.
    pub(super) fn all_deployed(&self) -> bool {
        self.running.keys().all(|i| self.trials.get(*i as usize).is_some_and(|t| t.status == TrialStatus::Running))
    }

    /// Hand a trial to a worker once the transaction commits.
    pub(super) fn dispatch(&mut self, index: u64, arm: Arm, attach: Option<serde_json::Value>, slot: Option<usize>) {
        let slot = match slot.filter(|s| self.free_slots.remove(s)) {
            Some(s) => s,
            None => self.free_slots.pop_first().unwrap_or(self.running.len()),
        };
        let started_at = self.trials[index as usize].started_at.as_deref().and_then(store::parse_time);
        let (ctl_tx, ctl_rx) = crate::runners::control_channel(self.waker.clone());
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

    /// Create new trials while there is room, budget and no reason to stop. Before each
    /// proposal, what the workers reported meanwhile (`arrived`) is applied first, so that a
    /// proposal learns from every trial that has ended, not only from those that had ended
    /// when this round began: proposing takes tens of milliseconds, and short trials end
    /// while the ones before them are proposed.
    pub(super) fn fill(
        &mut self,
        tx: &mut dyn Tx,
        arrived: &mut dyn FnMut() -> Vec<RunnerEvent>,
    ) -> Result<(), store::StoreError> {
        loop {
            let more = arrived();
            if !more.is_empty() {
                self.apply_events(tx, more)?;
            }
            if !self.room() {
                return Ok(());
            }
            let Some(new) = self.create(tx)? else { return Ok(()) };
            self.undeployed.insert(new.index);
            self.deployed_now += 1;
            self.print(RunEvent::Deployed { index: new.index, params: new.params, generation: new.generation });
            self.dispatch(new.index, new.arm, None, None);
        }
    }

    /// Whether a new trial may be created now: room, budget and no reason to stop.
    fn room(&self) -> bool {
        let o = &self.spec.orchestration;
        let max_pending = o.max_pending_trials.unwrap_or(o.parallelism).max(1);
        self.halt.is_none()
            && !self.exhausted
            && o.max_trials_per_worker.is_none_or(|cap| self.created_now < cap)
            && self.running.len() < o.parallelism
            && self.nonlost < o.max_trials
            && self.undeployed.len() < max_pending
    }

    /// Propose the next arm (an arm to run again first) and record it as a new trial of
    /// this worker: CANDIDATE, counted, its arm taken, pending in the model. `None`: nothing
    /// more to propose (an interrupt came, or the search space is exhausted).
    pub(super) fn create(&mut self, tx: &mut dyn Tx) -> Result<Option<NewArm>, store::StoreError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Ok(None);
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
                        return Ok(None);
                    }
                }
            }
        };
        // An interrupt that came while the proposal was computed: it is not deployed
        // (the generator's state is not saved, so a resume proposes it again).
        if self.interrupted.load(Ordering::SeqCst) {
            return Ok(None);
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
            holder: Some(session),
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
        self.created_now += 1;
        tracing::debug!(trial = index, %generation, "new trial");
        if self.generator.learns() {
            self.generator.pending(index, &arm);
        }
        Ok(Some(NewArm { index, arm, params, generation }))
    }

    /// Record that a trial runs (through STAGED if it is still a candidate), with the run
    /// metadata that lets a restarted optx find it.
    pub(super) fn mark_running(
        &mut self,
        tx: &mut dyn Tx,
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
    pub(super) fn apply(
        &mut self,
        tx: &mut dyn Tx,
        batch: Vec<RunnerEvent>,
        arrived: &mut dyn FnMut() -> Vec<RunnerEvent>,
    ) -> Result<(), store::StoreError> {
        self.sync(tx)?;
        self.apply_events(tx, batch)?;
        self.fill(tx, arrived)
    }

    /// Apply what the workers reported.
    fn apply_events(&mut self, tx: &mut dyn Tx, batch: Vec<RunnerEvent>) -> Result<(), store::StoreError> {
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
                    self.add_points(tx, index, &points);
                    let last = points.iter().rev().find(|p| p.mean.is_finite() && p.progression.is_some());
                    if let Some(p) = last {
                        let progression = p.progression.unwrap_or_default();
                        let (metric, value) = (p.metric.clone(), p.mean);
                        self.print(RunEvent::Progress { index, progression, metric, value });
                    }
                }
                RunnerEvent::Finished { index, result } => self.finish(tx, index, result)?,
                RunnerEvent::Notice(msg) => self.print(RunEvent::Notice(msg)),
            }
        }
        Ok(())
    }

    /// A trial the rule stopped (its curve and final values already stored): EARLY_STOPPED
    /// with the rule's reason; it counts toward `max_trials`, and the model learns from its
    /// last values.
    fn early_stopped(
        &mut self,
        tx: &mut dyn Tx,
        index: u64,
        decision: Stopped,
        result: crate::runners::TrialResult,
    ) -> Result<(), store::StoreError> {
        let spec = self.spec;
        let reason = decision.reason.clone();
        let meta = decision.metadata(result.stop_metadata.as_ref());
        // Its curve and final values are stored (by `finish`). Its last point of the compared
        // curve is its final value of that metric when the runner read none.
        let mut finals = result.finals.clone();
        let last = self.curves.get(index).and_then(|c| c.points.last().copied());
        if let (Some(es), Some(last)) = (&spec.early_stopping, last) {
            if !finals.iter().any(|p| p.metric == es.metric) {
                let p = crate::runners::MetricPoint {
                    metric: es.metric.clone(),
                    progression: Some(last.0),
                    mean: last.1,
                    sem: None,
                };
                tx.observation(&observation(index, &p, true))?;
                finals.push(p);
            }
        }
        let data = TransitionData { reason: Some(&reason), stop_metadata: Some(&meta), ..Default::default() };
        let t = &mut self.trials[index as usize];
        tx.transition(index, t.status, TrialStatus::EarlyStopped, &data)?;
        t.status = TrialStatus::EarlyStopped;
        t.reason = Some(reason.clone());
        t.completed_at = Some(tx.time().to_string());
        let t = t.clone();
        if self.generator.learns() {
            match Arm::from_json(&spec.space, &t.parameters) {
                Some(arm) => {
                    let values = finals.iter().map(|p| (p.metric.clone(), (p.mean, p.sem))).collect();
                    self.generator.observe(index, &arm, values);
                }
                None => self.generator.forget(index),
            }
        }
        self.trials[index as usize].shrink();
        self.undeployed.remove(&index);
        if let Some(r) = self.running.remove(&index) {
            self.free_slots.insert(r.slot);
        }
        self.print(RunEvent::EarlyStopped { index, reason });
        self.effects.push(Effect::Cleanup { index, failed: false });
        Ok(())
    }

    /// Points of the early-stopping metric's curve, one at a time: the rule is asked at
    /// each, so that what it decides does not depend on how many points one read brought.
    fn add_points(&mut self, tx: &dyn Tx, index: u64, points: &[crate::runners::MetricPoint]) {
        let Some(es) = &self.spec.early_stopping else { return };
        for p in points.iter().filter(|p| p.metric == es.metric && p.mean.is_finite()) {
            let Some(at) = p.progression else { continue };
            // Points a stopped trial reports after the rule's decision do not count (unless
            // it completes before the stop reaches it: they are held back till its end).
            if let Some(d) = self.stopping.get_mut(&index) {
                d.held.push((at, p.mean));
                continue;
            }
            self.curves.push(index, at, p.mean);
            self.early_stop(tx, (index, at), None);
        }
    }

    /// Ask the rule about every running trial (but `ending`, whose end is being recorded),
    /// on the point `trigger` (trial, progression) that just arrived.
    fn early_stop(&mut self, tx: &dyn Tx, trigger: (u64, f64), ending: Option<u64>) {
        let Some(checker) = self.early.as_mut() else { return };
        let mut running: Vec<u64> = self
            .running
            .keys()
            .copied()
            .filter(|i| !self.stopping.contains_key(i) && self.curves.contains(*i) && Some(*i) != ending)
            .collect();
        running.sort_unstable();
        if running.is_empty() {
            return;
        }
        for d in checker.decide(&self.curves, &running) {
            tracing::debug!(trial = d.trial, progression = d.progression, "early stopping: {}", d.reason);
            let stopped = Stopped {
                reason: d.reason.clone(),
                progression: d.progression,
                decided_at: tx.time().to_string(),
                trigger,
                held: Vec::new(),
            };
            self.stopping.insert(d.trial, stopped);
            self.effects.push(Effect::Stop { index: d.trial, reason: d.reason });
        }
    }

    pub(super) fn finish(
        &mut self,
        tx: &mut dyn Tx,
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
        // The last points of its curve count in the comparisons of the trials still running
        // (but not those a stopped trial reported after the rule's decision).
        // Each asks the rule about the others, as any new point does (`replay` does the same).
        // Stopped by the rule: it ends EARLY_STOPPED unless it ended otherwise before the stop
        // reached it (completed, say), and then every point it reported counts, as on resume.
        let decision = self.stopping.remove(&index);
        let stopped = matches!(result.outcome, Outcome::Failed { .. }) && decision.is_some();
        if let (Some(es), false) = (&spec.early_stopping, stopped) {
            let held = decision.as_ref().map(|d| d.held.clone()).unwrap_or_default();
            let reported = result.curve.iter().filter(|p| p.metric == es.metric && p.mean.is_finite());
            let points: Vec<(f64, f64)> =
                held.into_iter().chain(reported.filter_map(|p| Some((p.progression?, p.mean)))).collect();
            for (at, mean) in points {
                self.curves.push(index, at, mean);
                self.early_stop(tx, (index, at), Some(index));
            }
        }
        if let Some(decision) = decision.filter(|_| stopped) {
            return self.early_stopped(tx, index, decision, result);
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
                if let (Some(es), false, true) = (&spec.early_stopping, self.said_no_curve, self.curves.is_empty()) {
                    self.said_no_curve = true;
                    self.print(RunEvent::Notice(format!(
                        "early stopping: trial {index} ended without a point of a learning curve of `{}`; report one with a progression (a line `{}=3 {}=0.4`) for the rule to compare trials",
                        es.metric, progression_key(spec), es.metric
                    )));
                }
                if let (true, Some(Some(v))) = (feas, values.first()) {
                    self.completed.push(*v);
                    if let Some(s) = stop::global(spec, &self.completed) {
                        tx.event(Some(index), "global_stopping", Some(&s.why))?;
                        self.stop(s);
                    }
                }
                let note = result.note.clone();
                self.print(RunEvent::Completed {
                    index,
                    values: spec.goal.objectives.iter().map(|o| o.name.clone()).zip(values).collect(),
                    feasible: feas,
                    best,
                    note,
                });
                self.effects.push(Effect::Cleanup { index, failed: false });
                if let Some(s) = stop::cost(&spec.orchestration, self.cost) {
                    self.stop(s);
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
                    if self.failures.len() < 10_000 {
                        self.failures.push((index, reason.clone()));
                    }
                    self.check_failure_rate();
                }
                if lost && t.session == self.session {
                    self.lost_streak += 1;
                    if let Some(s) = stop::lost_streak(&spec.orchestration, self.lost_streak, reason) {
                        self.stop(s);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn check_failure_rate(&mut self) {
        let deployed = self.deployed_now.saturating_sub(self.lost_now);
        if let Some(mut s) = stop::failure_rate(&self.spec.orchestration, self.failed_now, deployed) {
            // Why they failed, grouped, so that the cause to fix is in front of the user.
            s.why.push_str(&stop::failure_groups(&self.failures, 5));
            self.stop(s);
        }
    }

    /// A new trial that will not be deployed after all (an interrupt came first).
    pub(super) fn not_deployed(&mut self, index: u64) -> String {
        self.undeployed.remove(&index);
        if let Some(r) = self.running.remove(&index) {
            self.free_slots.insert(r.slot);
        }
        format!("trial {index} was not started: interrupted first; `optx resume` starts it")
    }

    /// Stop deploying for `s`, if it is more severe than what the run stopped for (if
    /// anything), and say so.
    pub(super) fn stop(&mut self, s: Stop) {
        if self.halt_for(s) {
            self.announce_halt();
        }
    }

    /// Stop deploying for `s` if it is more severe than the current reason; whether it was.
    pub(super) fn halt_for(&mut self, s: Stop) -> bool {
        let more = stop::supersedes(self.halt.as_ref(), &s);
        if more {
            self.halt = Some(s);
        }
        more
    }

    pub(super) fn announce_halt(&mut self) {
        if let Some(Stop { why, .. }) = &self.halt {
            let n = self.running.len();
            let wait = if n > 0 { format!("; waiting for {n} running trial(s)") } else { String::new() };
            let msg = format!("{why}{wait}");
            self.print(RunEvent::Notice(msg));
        }
    }
}
