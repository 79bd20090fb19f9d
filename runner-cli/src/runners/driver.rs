//! The job driver: one loop that follows every live trial of a runner whose trials live
//! elsewhere (a plugin's queue, an external system, Slurm), instead of a thread per trial.
//!
//! Deployment stays on the scheduler's small pool of workers: [`TrialRunner::execute`]
//! submits the trial and hands it to the driver, then returns. The driver, on a thread the
//! scheduler starts for it, asks about all live jobs in one round of its backend
//! ([`Backend::poll`]: one `poll_trials`, one `status_all`, one `squeue`) at Ax's pace: the
//! wait between rounds starts at `initial_seconds_between_polls`, grows by the backoff
//! factor while nothing changes, and starts again from the beginning when anything does (a
//! status, a new job). It reads the learning curves of running jobs in the same round,
//! passes stops on (one call for all the jobs stopped at once), ends jobs that outlive
//! `ttl_seconds_for_trials`, and hands ended jobs back to the pool to read their results.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{after, bounded, never, select, unbounded, Receiver, Sender, TryRecvError};
use serde_json::Value;

use super::{Control, MetricPoint, PollSchedule, RunnerEvent, Task, TrialJob, TrialResult, TrialRunner, Unstarted};

/// What a backend knows of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Accepted, waiting for resources.
    Staged,
    Running,
    /// Ended well: its results are read next (the completion verdict may still fail it).
    Completed,
    Failed(String),
    /// Given up on for a reason outside the trial.
    Abandoned(String),
    /// Its outcome cannot be known through no fault of the trial (preempted, node failure):
    /// it runs again.
    Lost(String),
}

impl JobState {
    fn ended(&self) -> bool {
        !matches!(self, JobState::Staged | JobState::Running)
    }
}

/// The result of a job that ended without results to read (failed, abandoned, lost);
/// `None` for a completed one, whose results the backend reads.
pub fn ended_without_results(end: &JobState) -> Option<TrialResult> {
    match end {
        JobState::Failed(reason) => Some(TrialResult::failed(reason.clone(), false)),
        JobState::Lost(reason) => Some(TrialResult::failed(reason.clone(), true)),
        JobState::Abandoned(reason) => Some(TrialResult {
            outcome: super::Outcome::Abandoned { reason: reason.clone() },
            ..TrialResult::failed(String::new(), false)
        }),
        JobState::Staged | JobState::Running | JobState::Completed => None,
    }
}

/// A round's answers: the state of each job it has news of, or why it fails.
pub type Answers = Vec<(u64, Result<JobState, String>)>;

/// A round of polls that could not be made.
#[derive(Debug, Clone)]
pub enum PollError {
    /// Worth asking again later (a status command that failed, a busy scheduler).
    Retry(String),
    /// Every job asked about fails with this reason.
    Fatal(String),
}

/// How a submission ended.
pub enum Submitted {
    /// The job runs elsewhere; this run metadata finds it again (also after a restart).
    Job(Value),
    /// It was not deployed: why, and whether that is the trial's fault (`lost` if not).
    Refused(String, bool),
    /// The trial was already ended through the events (a plugin call past its timeout).
    Ended,
}

/// A job the driver follows, as a backend sees it.
pub struct Live<F> {
    pub job: TrialJob,
    pub meta: Value,
    /// The backend's own state of this job (a tail on its output, the points sent).
    pub follow: F,
}

/// A system that runs trials elsewhere, polled in rounds by the driver.
pub trait Backend: Send + Sync + 'static {
    /// Per-job state of the backend, made when the driver takes a job on.
    type Follow: Send + 'static;

    /// What the runner is called in messages.
    fn name(&self) -> &str;

    /// Deploy one trial, on a worker of the pool. May wait (for the system's capacity)
    /// until `control` says stop.
    fn submit(&self, job: &TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) -> Submitted;

    /// Deploy several trials in one call (`run_trials_in_batches`): `done(k, how)` for the
    /// `k`-th of `jobs` as soon as it is known (the ones deployed first may have to end
    /// before the system has room for the rest).
    fn submit_batch(&self, jobs: &[TrialJob], events: &Sender<RunnerEvent>, done: &mut dyn FnMut(usize, Submitted)) {
        let never = never();
        for (k, j) in jobs.iter().enumerate() {
            done(k, self.submit(j, &never, events));
        }
    }

    fn follow(&self, job: &TrialJob) -> Self::Follow;

    /// The state of these jobs, in as few calls to the system as it allows. A job left out
    /// has no news this round; an `Err` for one job ends it as FAILED.
    fn poll(&self, jobs: &[&Live<Self::Follow>]) -> Result<Answers, PollError>;

    /// New points of the learning curves of these running jobs.
    fn progress(&self, _jobs: &mut [&mut Live<Self::Follow>]) -> Vec<(u64, Vec<MetricPoint>)> {
        Vec::new()
    }

    /// Stop these jobs (each with its reason); the stop metadata of each, in order.
    fn stop(&self, jobs: &[(&Live<Self::Follow>, &str)]) -> Vec<Option<Value>>;

    /// Read what an ended job left and decide its outcome, on a worker of the pool. `None`:
    /// the trial was already ended through `events` (a plugin call past its timeout).
    fn finish(&self, live: Live<Self::Follow>, end: JobState, events: &Sender<RunnerEvent>) -> Option<TrialResult>;

    /// With `initial_seconds_between_polls = 0` (poll as fast as events come): the state of
    /// a job just submitted, asked at once by the worker that submitted it, where that is
    /// cheap (a call into a plugin, not a command). `None`: the driver asks in its next
    /// round. A job that ended at once is finished on that worker: a queue that completes
    /// jobs as fast as they come costs no hand-off per job. `Some(None)`: the trial was
    /// already ended through `events` (a plugin call past its timeout).
    fn poll_at_once(&self, _live: &Live<Self::Follow>, _events: &Sender<RunnerEvent>) -> Option<Option<JobState>> {
        None
    }

    /// Consecutive failed rounds a job survives (`None`: retried for ever, with backoff).
    fn poll_retries(&self) -> Option<u32> {
        None
    }

    fn unstarted(&self, _job: &TrialJob, staged: bool) -> Unstarted {
        if staged {
            Unstarted::Unknown("optx stopped while deploying this trial".into())
        } else {
            Unstarted::Never
        }
    }

    fn cleanup(&self, job_dir: &Path, failed: bool);

    /// Workers blocked for good in a call past its timeout.
    fn stuck(&self) -> usize {
        0
    }
}

/// A job on its way to the driver, with the ends of its channels.
struct Entry<F> {
    live: Live<F>,
    control: Receiver<Control>,
    events: Sender<RunnerEvent>,
    /// Run metadata of a new deployment not yet reported: sent before the driver waits,
    /// or with the job's end when it ends at its first poll (one commit, not two).
    deployed: Option<Value>,
    ttl_at: Option<Instant>,
    last: JobState,
}

enum Msg<F> {
    Add(Box<Entry<F>>),
    Close,
}

/// How many workers deploy trials for a driven runner, whatever the parallelism.
pub const DEPLOYERS: usize = 4;

/// A [`TrialRunner`] made of a [`Backend`] and the loop that follows its jobs.
pub struct Driver<B: Backend> {
    backend: Arc<B>,
    polls: PollSchedule,
    ttl: Option<Duration>,
    inbox: Sender<Msg<B::Follow>>,
    intake: Mutex<Option<Receiver<Msg<B::Follow>>>>,
    wake: (Sender<()>, Receiver<()>),
}

impl<B: Backend> Driver<B> {
    pub fn new(backend: B, polls: PollSchedule, ttl: Option<Duration>) -> Self {
        let (inbox, intake) = unbounded();
        Driver { backend: Arc::new(backend), polls, ttl, inbox, intake: Mutex::new(Some(intake)), wake: bounded(1) }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn take_on(
        &self,
        job: TrialJob,
        meta: Value,
        deployed: bool,
        control: Receiver<Control>,
        events: &Sender<RunnerEvent>,
    ) {
        let started = job.started_at.unwrap_or_else(SystemTime::now);
        let ttl_at = self.ttl.map(|t| Instant::now() + t.saturating_sub(started.elapsed().unwrap_or_default()));
        let follow = self.backend.follow(&job);
        let live = Live { job, meta, follow };
        if deployed && self.polls.initial.is_zero() {
            match self.backend.poll_at_once(&live, events) {
                // The watchdog ended it.
                Some(None) => return,
                Some(Some(s)) if s.ended() => {
                    let (index, run_metadata) = (live.job.index, live.meta.clone());
                    let result = self.backend.finish(live, s, events);
                    // Its deployment and its end back to back: one commit, not two.
                    let _ = events.send(RunnerEvent::Deployed { index, run_metadata });
                    if let Some(result) = result {
                        let _ = events.send(RunnerEvent::Finished { index, result });
                    }
                    return;
                }
                _ => {}
            }
        }
        let entry = Entry {
            deployed: deployed.then(|| live.meta.clone()),
            live,
            control,
            events: events.clone(),
            ttl_at,
            last: JobState::Staged,
        };
        if let Err(e) = self.inbox.send(Msg::Add(Box::new(entry))) {
            // The driver is gone (optx is stopping): the job goes on; a resume finds it.
            if let Msg::Add(e) = e.into_inner() {
                tracing::debug!(trial = e.live.job.index, "the driver has stopped; the job is left to a resume");
            }
        }
    }
}

fn deployed(e: &mut Entry<impl Sized>) {
    if let Some(run_metadata) = e.deployed.take() {
        let _ = e.events.send(RunnerEvent::Deployed { index: e.live.job.index, run_metadata });
    }
}

fn end(mut e: Entry<impl Sized>, result: TrialResult) {
    deployed(&mut e);
    let _ = e.events.send(RunnerEvent::Finished { index: e.live.job.index, result });
}

impl<B: Backend> TrialRunner for Driver<B> {
    fn execute(&self, mut job: TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
        let (meta, new) = match job.attach.take() {
            // Running when optx stopped: the backend finds it again by its run metadata.
            Some(m) => (m, false),
            None => match self.backend.submit(&job, control, events) {
                Submitted::Job(m) => {
                    job.started_at = Some(SystemTime::now());
                    (m, true)
                }
                Submitted::Refused(reason, lost) => {
                    let _ = events
                        .send(RunnerEvent::Finished { index: job.index, result: TrialResult::failed(reason, lost) });
                    return;
                }
                Submitted::Ended => return,
            },
        };
        self.take_on(job, meta, new, control.clone(), events);
    }

    fn unstarted(&self, job: &TrialJob, staged: bool) -> Unstarted {
        self.backend.unstarted(job, staged)
    }

    fn cleanup(&self, job_dir: &Path, failed: bool) {
        self.backend.cleanup(job_dir, failed)
    }

    fn deploy_batch(&self, jobs: Vec<TrialJob>, events: &Sender<RunnerEvent>) {
        self.backend.submit_batch(&jobs, events, &mut |k, how| {
            let index = jobs[k].index;
            match how {
                Submitted::Job(run_metadata) => {
                    let _ = events.send(RunnerEvent::Deployed { index, run_metadata });
                }
                Submitted::Refused(reason, lost) => {
                    let _ = events.send(RunnerEvent::Finished { index, result: TrialResult::failed(reason, lost) });
                }
                Submitted::Ended => {}
            }
        });
    }

    fn close(&self) {
        let _ = self.inbox.send(Msg::Close);
    }

    fn stuck(&self) -> usize {
        self.backend.stuck()
    }

    fn workers(&self, parallelism: usize) -> usize {
        parallelism.clamp(1, DEPLOYERS)
    }

    fn waker(&self) -> Option<Sender<()>> {
        Some(self.wake.0.clone())
    }

    fn drive(&self, spawn: &dyn Fn(Task)) {
        let Some(intake) = self.intake.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        Round { driver: self, spawn, live: BTreeMap::new(), errors: 0 }.run(&intake)
    }
}

/// The driver's loop and its jobs.
struct Round<'a, B: Backend> {
    driver: &'a Driver<B>,
    spawn: &'a dyn Fn(Task),
    live: BTreeMap<u64, Entry<B::Follow>>,
    /// Consecutive rounds that failed.
    errors: u32,
}

impl<B: Backend> Round<'_, B> {
    fn run(&mut self, intake: &Receiver<Msg<B::Follow>>) {
        let polls = self.driver.polls;
        let mut wait = polls.initial;
        let mut next = Instant::now();
        let wake = &self.driver.wake.1;
        loop {
            let now = Instant::now();
            let ttl = self.live.values().filter_map(|e| e.ttl_at).min();
            let due = match (self.live.is_empty(), ttl) {
                (true, _) => None,
                (false, Some(t)) => Some(next.min(t)),
                (false, None) => Some(next),
            };
            let timeout = due.map(|d| d.saturating_duration_since(now));
            if timeout != Some(Duration::ZERO) {
                // About to wait: what was deployed is reported now, not at its end.
                self.live.values_mut().for_each(deployed);
            }
            let mut controls = false;
            let mut added = false;
            let mut closing = false;
            let mut take = |m: Msg<B::Follow>, live: &mut BTreeMap<u64, Entry<B::Follow>>| match m {
                Msg::Add(e) => {
                    added = true;
                    live.insert(e.live.job.index, *e);
                }
                Msg::Close => closing = true,
            };
            if timeout != Some(Duration::ZERO) {
                let timer = timeout.map_or_else(never, after);
                select! {
                    recv(intake) -> m => match m {
                        Ok(m) => take(m, &mut self.live),
                        Err(_) => return,
                    },
                    recv(wake) -> _ => controls = true,
                    recv(timer) -> _ => {},
                }
            }
            while let Ok(m) = intake.try_recv() {
                take(m, &mut self.live);
            }
            if wake.try_recv().is_ok() {
                controls = true;
            }
            if closing {
                // No more trials in this process; those still live go on and a resume
                // finds them again.
                return;
            }
            if controls {
                self.controls();
            }
            self.expire();
            if added {
                // A new job: ask about it soon, as after a change.
                wait = polls.initial;
                next = next.min(Instant::now() + wait);
            }
            if Instant::now() >= next && !self.live.is_empty() {
                // Rounds are spaced from start to start: a job that ends just after one is
                // seen by the next within the wait, however long the round took.
                let started = Instant::now();
                let changed = self.poll();
                wait = if changed { polls.initial } else { polls.next(wait) };
                next = started + wait;
            }
        }
    }

    /// Stops the dispatcher sent: one call for all of them.
    fn controls(&mut self) {
        let mut stops = Vec::new();
        let mut gone = Vec::new();
        for (i, e) in &self.live {
            match e.control.try_recv() {
                Ok(Control::Stop { reason, lost }) => stops.push((*i, reason, lost)),
                Err(TryRecvError::Disconnected) => gone.push(*i),
                Err(TryRecvError::Empty) => {}
            }
        }
        // Nobody listens for this trial any more (optx is stopping): its job goes on.
        for i in gone {
            self.live.remove(&i);
        }
        self.stop(stops);
    }

    fn stop(&mut self, stops: Vec<(u64, String, bool)>) {
        if stops.is_empty() {
            return;
        }
        let asked: Vec<(&Live<B::Follow>, &str)> =
            stops.iter().filter_map(|(i, r, _)| self.live.get(i).map(|e| (&e.live, r.as_str()))).collect();
        let metadata = self.driver.backend.stop(&asked);
        for ((i, reason, lost), stop_metadata) in stops.into_iter().zip(metadata) {
            if let Some(e) = self.live.remove(&i) {
                end(e, TrialResult { stop_metadata, ..TrialResult::failed(reason, lost) });
            }
        }
    }

    /// Jobs past `ttl_seconds_for_trials` fail, and are stopped.
    fn expire(&mut self) {
        let now = Instant::now();
        let Some(ttl) = self.driver.ttl else { return };
        let expired: Vec<(u64, String, bool)> = self
            .live
            .iter()
            .filter(|(_, e)| e.ttl_at.is_some_and(|t| t <= now))
            .map(|(i, _)| (*i, format!("ran longer than ttl_seconds_for_trials ({}s)", ttl.as_secs_f64()), false))
            .collect();
        self.stop(expired);
    }

    /// One round: the state of every live job, and the new points of the running ones.
    /// Whether anything changed.
    fn poll(&mut self) -> bool {
        let backend = &self.driver.backend;
        let asked: Vec<&Live<B::Follow>> = self.live.values().map(|e| &e.live).collect();
        tracing::debug!(runner = backend.name(), jobs = asked.len(), "one poll for every live job");
        let answers = match backend.poll(&asked) {
            Ok(a) => {
                self.errors = 0;
                a
            }
            Err(PollError::Retry(why)) => {
                self.errors += 1;
                tracing::warn!(runner = backend.name(), error = %why, "polling failed; will retry");
                if backend.poll_retries().is_some_and(|n| self.errors > n) {
                    let reason = format!("polling failed {} times in a row, last: {why}", self.errors);
                    self.fail_all(&reason);
                    return true;
                }
                return false;
            }
            Err(PollError::Fatal(why)) => {
                self.fail_all(&why);
                return true;
            }
        };
        let mut changed = false;
        let mut running = Vec::new();
        for (i, answer) in answers {
            let Some(e) = self.live.get_mut(&i) else { continue };
            match answer {
                Err(reason) => {
                    changed = true;
                    if let Some(e) = self.live.remove(&i) {
                        end(e, TrialResult::failed(reason, false));
                    }
                }
                Ok(s) if s.ended() => {
                    changed = true;
                    if let Some(mut e) = self.live.remove(&i) {
                        deployed(&mut e);
                        let (backend, events) = (Arc::clone(backend), e.events.clone());
                        (self.spawn)(Box::new(move || {
                            let index = e.live.job.index;
                            if let Some(result) = backend.finish(e.live, s, &events) {
                                let _ = events.send(RunnerEvent::Finished { index, result });
                            }
                        }));
                    }
                }
                Ok(s) => {
                    if s != e.last {
                        changed = true;
                        e.last = s.clone();
                    }
                    if s == JobState::Running {
                        running.push(i);
                    }
                }
            }
        }
        if !running.is_empty() {
            running.sort_unstable();
            let mut jobs: Vec<&mut Live<B::Follow>> = self
                .live
                .iter_mut()
                .filter(|(i, _)| running.binary_search(i).is_ok())
                .map(|(_, e)| &mut e.live)
                .collect();
            for (i, points) in backend.progress(&mut jobs) {
                if points.is_empty() {
                    continue;
                }
                if let Some(e) = self.live.get_mut(&i) {
                    deployed(e);
                    let _ = e.events.send(RunnerEvent::Progress { index: i, points });
                }
            }
        }
        changed
    }

    fn fail_all(&mut self, reason: &str) {
        for (_, e) in std::mem::take(&mut self.live) {
            end(e, TrialResult::failed(reason.to_string(), false));
        }
    }
}
