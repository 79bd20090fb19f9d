//! The dispatcher loop: one thread that owns the run state, wakes up on worker events,
//! signals and the deadline, applies what arrived in one transaction, and then carries out
//! what was decided.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, unbounded, Receiver, Sender};

use super::pool::{Pool, Work};
use super::resume::pending_reruns;
use super::state::{Effect, State};
use super::stop;
use super::{EventSink, RunEnd, RunEvent};
use crate::domain::{Arm, ExperimentSpec, TrialStatus};
use crate::generate::{GenState, Generator};
use crate::runners::{Control, RunnerEvent, TrialRunner};
use crate::store::{self, Ledger, LedgerExt};

struct Dispatcher<'a> {
    store: &'a mut dyn Ledger,
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
                    let want = self.runner.workers(self.parallelism.max(self.st.running.len())) + self.runner.stuck();
                    if let Err(e) = self.pool.grow_to(want) {
                        tracing::warn!("{e}");
                    }
                    let _ = self.jobs.send(Work::One(job, ctl));
                }
                Effect::Cleanup { index, failed } => self.runner.cleanup(&self.st.trial_dir(index), failed),
                Effect::Stop { index, reason } => {
                    if let Some(r) = self.st.running.get(&index) {
                        r.control.send(Control::Stop { reason, lost: false });
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = self.jobs.send(Work::Batch(batch));
        }
    }

    /// Workers of the store (but this one) that are dead, and the trials that nobody
    /// follows any more (a dead or ended worker's): taken over here unless another live
    /// worker is quicker.
    fn take_over_dead_peers(&mut self) -> Result<(), store::StoreError> {
        let me = self.st.session;
        let dead: Vec<i64> = self
            .store
            .workers()?
            .into_iter()
            .filter(|w| w.id != me && w.open() && !super::worker_alive(w))
            .map(|w| w.id)
            .collect();
        let (st, runner) = (&mut self.st, Arc::clone(&self.runner));
        self.store.tx(|tx| st.take_orphans(tx, runner.as_ref(), &dead))
    }

    fn on_signal(&mut self) {
        self.signals += 1;
        let n = self.st.running.len();
        match self.signals {
            1 => {
                self.st.halt_for(stop::interrupted());
                let msg = if n > 0 {
                    format!("interrupted: deploying nothing more; waiting for {n} running trial(s) to finish (interrupt again to stop them)")
                } else {
                    "interrupted: deploying nothing more".into()
                };
                self.sink.event(&RunEvent::Notice(msg));
            }
            2 => {
                self.st.halt_for(stop::interrupted());
                self.sink.event(&RunEvent::Notice(format!(
                    "interrupted again: stopping {n} running trial(s); they will run again on `optx resume` (interrupt a third time to exit at once)"
                )));
                for r in self.st.running.values() {
                    r.control
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
        // Loading may have taken a while: renew before anything else.
        self.store.renew(self.st.session)?;
        let st = &mut self.st;
        let runner = Arc::clone(&self.runner);
        self.store.tx(|tx| st.reconcile(tx, runner.as_ref()))?;
        self.act();
        let timeout = deadline.map_or_else(never, crossbeam_channel::at);
        // After the deadline, running trials get `stop_grace` to end; those still running
        // then are left to a resume (they go on without optx, as after a crash).
        let mut grace = never::<Instant>();
        let stop_grace = match &self.st.spec.runner {
            crate::domain::RunnerSpec::Command(c) => c.stop_grace,
            _ => Duration::from_secs(10),
        };
        let events = self.events.clone();
        // The lease is renewed every third of its length, whatever else happens.
        let lease = Duration::from_secs_f64(self.st.spec.orchestration.worker_lease_seconds / 3.0);
        let renew = crossbeam_channel::tick(lease);
        loop {
            if self.st.running.is_empty() {
                break;
            }
            if self.st.spec.orchestration.detach && self.st.all_deployed() {
                // `run --detach`: the jobs are recorded with their ids; a resume follows them.
                return Ok(RunEnd::Detached(self.st.running.len()));
            }
            let mut batch = Vec::new();
            select! {
                recv(events) -> ev => {
                    let Ok(ev) = ev else { break };
                    batch.push(ev);
                },
                recv(signals) -> _ => self.on_signal(),
                recv(timeout) -> _ => {
                    self.st.stop(stop::deadline());
                    grace = crossbeam_channel::after(stop_grace);
                },
                recv(grace) -> _ => {
                    let n = self.st.running.len();
                    self.sink.event(&RunEvent::Notice(format!(
                        "timeout_hours: {n} trial(s) still running {} after the deadline are left running; `optx resume` follows them",
                        humantime::format_duration(stop_grace)
                    )));
                    return Ok(RunEnd::Deadline(n));
                },
                recv(renew) -> _ => {
                    self.store.renew(self.st.session)?;
                    self.take_over_dead_peers()?;
                    self.act();
                    continue;
                },
            }
            while let Ok(more) = events.try_recv() {
                batch.push(more);
            }
            let st = &mut self.st;
            self.store.tx(|tx| st.apply(tx, batch, &mut || events.try_iter().collect()))?;
            self.act();
        }
        Ok(match &self.st.halt {
            Some(s) => s.kind.end(),
            None if self.st.interrupted.load(Ordering::SeqCst) => RunEnd::Interrupted,
            None => RunEnd::Done,
        })
    }
}

/// Interrupts (SIGINT, SIGTERM) as the dispatcher sees them: each one as a message, which
/// it counts, and a flag set at once, which a proposal being computed checks.
pub(crate) struct Interrupts {
    pub signals: Receiver<i32>,
    pub flag: Arc<AtomicBool>,
}

/// The objective of each completed, feasible trial, in the order they completed (the store's
/// times), for global stopping.
fn completed_in_order(
    spec: &ExperimentSpec,
    trials: &[crate::domain::Trial],
    finals: &HashMap<u64, std::collections::BTreeMap<String, crate::domain::Observation>>,
) -> Vec<f64> {
    let mut done: Vec<(&str, u64, f64)> = trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed && t.feasible == Some(true))
        .filter_map(|t| {
            let f = finals.get(&t.index)?;
            let v = spec.goal.objectives.first()?.value(|m| f.get(m).map(|o| o.mean))?;
            Some((t.completed_at.as_deref().unwrap_or(""), t.index, v))
        })
        .collect();
    done.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
    done.into_iter().map(|d| d.2).collect()
}

/// Run the loop on an open, owned store. Returns how it ended.
impl<'a> State<'a> {
    /// The state of a worker that joins `store` as `session`, built from the ledger: the
    /// trials, the arms taken, the budget spent, the best so far, the arms to run again,
    /// and the model fed with what ended and what runs.
    pub(super) fn load(
        spec: &'a ExperimentSpec,
        store: &mut dyn Ledger,
        seed: u64,
        session: i64,
        interrupted: Arc<AtomicBool>,
    ) -> Result<State<'a>, store::StoreError> {
        // The cursor first: what changes while the rest is read comes through the feed again.
        let cursor = store.last_event()?;
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
        let nonlost = trials.iter().filter(|t| !t.lost).count() as u64;
        let reruns = pending_reruns(spec, &trials);
        let stopped_at = crate::stopping::stopped_at(&trials);
        let mut generator = Generator::new(spec, seed, state);
        let learns = generator.learns();
        for t in trials.iter().filter(|_| learns) {
            let Some(arm) = Arm::from_json(&spec.space, &t.parameters) else { continue };
            // An early-stopped trial teaches the model its last values, as in the run.
            if matches!(t.status, TrialStatus::Completed | TrialStatus::EarlyStopped) {
                let values =
                    finals.get(&t.index).map(|m| m.iter().map(|(k, o)| (k.clone(), (o.mean, o.sem))).collect());
                generator.observe(t.index, &arm, values.unwrap_or_default());
            } else if !t.status.is_terminal() {
                generator.pending(t.index, &arm);
            }
        }
        // In the order they completed: read before `shrink` drops the times.
        let completed = completed_in_order(spec, &trials, &finals);
        let mut trials = trials;
        for t in trials.iter_mut().filter(|t| t.status.is_terminal()) {
            t.shrink();
        }
        let mut st = State {
            spec,
            generator,
            session,
            reruns,
            trials,
            taken,
            running: HashMap::new(),
            free_slots: (0..spec.orchestration.parallelism).collect(),
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
            cursor,
            created_now: 0,
            waker: None,
            early: spec.early_stopping.as_ref().map(crate::stopping::Checker::of),
            curves: Default::default(),
            stopping: HashMap::new(),
            completed: Vec::new(),
            failures: Vec::new(),
            said_no_curve: false,
        };
        // The objective of the completed, feasible trials, in the order they completed (for
        // global stopping, which a resume applies again unless told to ignore it).
        if spec.global_stopping.is_some() {
            st.completed = completed;
            if let Some(s) = super::stop::global(spec, &st.completed) {
                st.stop(s);
            }
        }
        // The curves the rule compares: every trial's, as the store holds them.
        if let Some(es) = &spec.early_stopping {
            st.curves = crate::stopping::stored_curves(&es.metric, &store.observations()?, &stopped_at);
        }
        // A budget spent already (by earlier runs or other workers) deploys nothing more.
        if let Some(s) = super::stop::cost(&spec.orchestration, st.cost) {
            st.stop(s);
        }
        Ok(st)
    }
}

pub(crate) fn drive(
    spec: &ExperimentSpec,
    store: &mut dyn Ledger,
    runner: Arc<dyn TrialRunner>,
    seed: u64,
    session: i64,
    sink: &mut dyn EventSink,
    interrupts: &Interrupts,
) -> Result<RunEnd, store::StoreError> {
    let (signals, interrupted) = (&interrupts.signals, Arc::clone(&interrupts.flag));
    let mut st = State::load(spec, store, seed, session, interrupted)?;
    st.waker = runner.waker();
    let parallelism = spec.orchestration.parallelism;
    let attach = st.trials.iter().filter(|t| !t.status.is_terminal()).count();
    let (jobs_tx, jobs_rx) = unbounded::<Work>();
    let (events_tx, events_rx) = unbounded();
    let mut pool = Pool {
        jobs: jobs_rx,
        tasks: Some(jobs_tx.clone()),
        events: events_tx,
        runner: Arc::clone(&runner),
        workers: Vec::new(),
        driver: None,
    };
    pool.grow_to(runner.workers(parallelism.max(attach).max(1))).map_err(store::StoreError::Other)?;
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
    if let Ok(RunEnd::Deadline(_)) = end {
        // Workers follow the trials left running: optx exits without waiting for them.
        return end;
    }
    let workers = std::mem::take(&mut d.pool.workers);
    let driver = d.pool.driver.take();
    drop(d);
    if end.is_ok() {
        // The driver ends on `close`, and drops its end of the workers' queue.
        runner.close();
        if let Some(h) = driver {
            let _ = h.join();
        }
        // A worker stuck in a call that never returns (a plugin's) cannot be joined: leave it.
        if runner.stuck() == 0 {
            for w in workers {
                let _ = w.join();
            }
        }
    }
    // On an error optx exits without waiting: running trials go on under the shepherd,
    // which records how they end, and `optx resume` reconciles them.
    end
}
