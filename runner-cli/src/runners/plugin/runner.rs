//! `[runner] kind = "plugin"`: a plugin's runner as a backend of the job driver. Its trials
//! are deployed by the scheduler's workers (`run_trial`, or `run_trials` in batches, after
//! `available_capacity` says there is room) and followed by the driver: one `poll_trials`
//! for every live trial per round (or a `poll_trial` each, in one hand-off, for a plugin
//! without it), the learning curves of running trials from the plugin metrics in the same
//! round, and one hand-off for the stops.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{after, select, Receiver, Sender};
use optx_plugin_api::host::{CallError, RunnerClient};
use optx_plugin_api::{Status, TrialContext, TrialRef};
use serde_json::Value;

use super::calls::{guarded, stuck, watched};
use super::check;
use super::metrics::{Abandoned, PluginMetrics};
use crate::domain::{ExperimentSpec, KeepTrialDirs, MetricRule, RunnerSpec};
use crate::runners::driver::{ended_without_results, Answers, Backend, Driver, JobState, Live, PollError, Submitted};
use crate::runners::output::read_result_files;
use crate::runners::verdict::verdict;
use crate::runners::{Control, MetricPoint, PollSchedule, RunnerEvent, TrialJob, TrialResult};

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

/// The plugin runner: a [`PluginBackend`] followed by the job driver.
pub type PluginRunner = Driver<PluginBackend>;

/// Open the plugin runner of `spec`: load the library, open the runner with its config.
pub fn plugin_runner(
    spec: &ExperimentSpec,
    polls: PollSchedule,
    metrics: PluginMetrics,
) -> Result<PluginRunner, String> {
    let ttl = spec.orchestration.ttl_seconds_for_trials.map(Duration::from_secs_f64);
    Ok(Driver::new(PluginBackend::new(spec, polls, metrics)?, polls, ttl))
}

pub struct PluginBackend {
    client: RunnerClient,
    plugin: String,
    metrics: BTreeMap<String, MetricRule>,
    required: Vec<String>,
    plugin_metrics: PluginMetrics,
    experiment: String,
    config: Value,
    polls: PollSchedule,
    call_timeout: Duration,
    keep: KeepTrialDirs,
    batch_poll: Support,
    capacity: Support,
    /// Capacity checks and the deployments they allow happen one at a time.
    deploying: Mutex<()>,
}

/// The plugin's answer about each trial of a round of `poll_trial`s.
type PollAnswers = Vec<(u64, Result<Option<optx_plugin_api::Poll>, CallError>)>;

/// Consecutive failed rounds of polls (errors marked "retry") that a trial survives.
const POLL_RETRIES: u32 = 10;

/// Points of learning curves of a trial sent so far (the store holds them).
pub struct Sent(usize);

impl PluginBackend {
    fn new(spec: &ExperimentSpec, polls: PollSchedule, plugin_metrics: PluginMetrics) -> Result<Self, String> {
        let RunnerSpec::Plugin(p) = &spec.runner else { return Err("not a plugin runner".into()) };
        let r = &p.plugin;
        let plugin = check(r, "runner")?;
        let client = plugin.open_runner(&r.name, &r.config, &spec.name).map_err(|e| {
            format!("{}: the plugin `{}` refused to open runner `{}`: {e}", r.origin, plugin.name, r.name)
        })?;
        Ok(PluginBackend {
            client,
            plugin: plugin.name.clone(),
            metrics: spec.metrics.clone(),
            required: spec.required_metrics().into_iter().map(str::to_string).collect(),
            plugin_metrics,
            experiment: spec.name.clone(),
            config: r.config.clone(),
            polls,
            call_timeout: p.call_timeout,
            keep: p.keep_trial_dirs,
            batch_poll: Support::default(),
            capacity: Support::default(),
            deploying: Mutex::new(()),
        })
    }

    /// A call of the driver, on its call thread, under `call_timeout`.
    fn guarded<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(RunnerClient) -> Result<T, CallError> + Send + 'static,
    ) -> Result<T, CallError> {
        let c = self.client.clone();
        guarded(self.call_timeout, what, move || f(c))
    }

    /// A call about `trials` on this worker, under the watchdog.
    fn watched<T>(
        &self,
        what: &str,
        trials: &[u64],
        events: &Sender<RunnerEvent>,
        f: impl FnOnce(&RunnerClient) -> Result<T, CallError>,
    ) -> Result<Result<T, CallError>, Abandoned> {
        watched(self.call_timeout, what, trials, events, || f(&self.client)).ok_or(Abandoned)
    }

    /// Wait until the runner has room for one more trial (when it says how much it has).
    /// `Err((reason, lost))`: the trial ends without being deployed.
    fn wait_for_capacity(
        &self,
        trials: &[u64],
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
    ) -> Result<Result<Option<usize>, (String, bool)>, Abandoned> {
        if self.capacity.no() {
            return Ok(Ok(None));
        }
        let mut wait = self.polls.initial;
        loop {
            match self.watched("available_capacity", trials, events, |c| c.available_capacity())? {
                Ok(None) => return Ok(Ok(None)),
                Ok(Some(n)) if n > 0 => return Ok(Ok(Some(n))),
                Ok(Some(_)) => {}
                Err(CallError::Unsupported) => {
                    self.capacity.set_no();
                    return Ok(Ok(None));
                }
                Err(e) => return Ok(Err((format!("the plugin's available_capacity failed: {e}"), false))),
            }
            select! {
                recv(control) -> c => {
                    let (reason, lost) = match c {
                        Ok(Control::Stop { reason, lost }) => (reason, lost),
                        Err(_) => ("optx stopped".into(), true),
                    };
                    return Ok(Err((format!("{reason} (before it was deployed)"), lost)));
                },
                recv(after(wait)) -> _ => {},
            }
            wait = self.polls.next(wait);
        }
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

    /// One `poll_trial` each, in one hand-off: a plugin without `poll_trials`.
    fn poll_each(&self, refs: Vec<TrialRef>) -> Result<PollAnswers, CallError> {
        self.guarded("poll_trial", move |c| {
            Ok(refs.into_iter().map(|t| (t.trial_index, c.poll_trial(t.trial_index, &t.metadata).map(Some))).collect())
        })
    }

    /// The trial completed: read its metrics.
    fn complete(&self, live: &mut Live<Sent>, events: &Sender<RunnerEvent>) -> Result<TrialResult, Abandoned> {
        let job = &live.job;
        let mut finals = BTreeMap::new();
        let mut curve = Vec::new();
        let mut problems = Vec::new();
        read_result_files(&job.trial_dir, &self.metrics, &self.required, &mut finals, &mut problems);
        self.plugin_metrics.fetch_watched(
            job.index,
            &live.meta,
            Some(events),
            &mut finals,
            &mut curve,
            &mut problems,
        )?;
        // The points sent while it ran are in the store already.
        let curve = curve.split_off(live.follow.0.min(curve.len()));
        let looked = "result.json in the trial dir and the [metrics] rules";
        let (outcome, note) = verdict(&self.required, &finals, &problems, looked, &|_| String::new());
        Ok(TrialResult { outcome, finals: finals.into_values().collect(), curve, stop_metadata: None, note })
    }
}

fn state_of(p: optx_plugin_api::Poll) -> JobState {
    match p.status {
        Status::Staged => JobState::Staged,
        Status::Running => JobState::Running,
        Status::Completed => JobState::Completed,
        Status::Failed => JobState::Failed(p.reason.unwrap_or_else(|| "the plugin's runner reported it failed".into())),
        Status::Abandoned => JobState::Abandoned(p.reason.unwrap_or_else(|| "the plugin's runner abandoned it".into())),
    }
}

impl Backend for PluginBackend {
    type Follow = Sent;

    fn name(&self) -> &str {
        &self.plugin
    }

    fn submit(&self, job: &TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) -> Submitted {
        if let Err(e) = std::fs::create_dir_all(&job.trial_dir) {
            return Submitted::Refused(format!("cannot create the trial dir {}: {e}", job.trial_dir.display()), false);
        }
        let ctx = self.context(job);
        let _one_at_a_time = (!self.capacity.no()).then(|| self.deploying.lock().unwrap_or_else(|e| e.into_inner()));
        let run = || -> Result<Submitted, Abandoned> {
            if let Err((reason, lost)) = self.wait_for_capacity(&[job.index], control, events)? {
                return Ok(Submitted::Refused(reason, lost));
            }
            Ok(match self.watched("run_trial", &[job.index], events, |c| c.run_trial(&ctx))? {
                Ok(meta) => Submitted::Job(meta),
                Err(e) => Submitted::Refused(format!("the plugin's run_trial failed: {e}"), false),
            })
        };
        run().unwrap_or(Submitted::Ended)
    }

    fn submit_batch(&self, jobs: &[TrialJob], events: &Sender<RunnerEvent>, done: &mut dyn FnMut(usize, Submitted)) {
        let mut ready = Vec::new();
        for (k, job) in jobs.iter().enumerate() {
            match std::fs::create_dir_all(&job.trial_dir) {
                Ok(()) => ready.push(k),
                Err(e) => {
                    let why = format!("cannot create the trial dir {}: {e}", job.trial_dir.display());
                    done(k, Submitted::Refused(why, false));
                }
            }
        }
        let never = crossbeam_channel::never();
        let mut rest = ready.as_slice();
        while !rest.is_empty() {
            let indices: Vec<u64> = rest.iter().map(|&k| jobs[k].index).collect();
            // As many as the runner has room for (all, when it does not say).
            let room = match self.wait_for_capacity(&indices, &never, events) {
                Err(Abandoned) => return rest.iter().for_each(|&k| done(k, Submitted::Ended)),
                Ok(Err((reason, lost))) => {
                    return rest.iter().for_each(|&k| done(k, Submitted::Refused(reason.clone(), lost)));
                }
                Ok(Ok(room)) => room.unwrap_or(rest.len()).max(1),
            };
            let (now, later) = rest.split_at(room.min(rest.len()));
            rest = later;
            let contexts: Vec<TrialContext> = now.iter().map(|&k| self.context(&jobs[k])).collect();
            let indices: Vec<u64> = now.iter().map(|&k| jobs[k].index).collect();
            tracing::debug!(plugin = %self.plugin, trials = now.len(), "run_trials: one call deploys them all");
            match self.watched("run_trials", &indices, events, |c| c.run_trials(&contexts)) {
                Err(Abandoned) => now.iter().for_each(|&k| done(k, Submitted::Ended)),
                Ok(Ok(metas)) => {
                    let n = metas.len();
                    for (&k, meta) in now.iter().zip(metas) {
                        done(k, Submitted::Job(meta));
                    }
                    for &k in &now[n.min(now.len())..] {
                        let why = "the plugin's run_trials returned no run metadata for it".to_string();
                        done(k, Submitted::Refused(why, false));
                    }
                }
                Ok(Err(CallError::Unsupported)) => {
                    // No batch call: one run_trial each.
                    for (&k, ctx) in now.iter().zip(&contexts) {
                        let job = &jobs[k];
                        let how = match self.watched("run_trial", &[job.index], events, |c| c.run_trial(ctx)) {
                            Err(Abandoned) => Submitted::Ended,
                            Ok(Ok(meta)) => Submitted::Job(meta),
                            Ok(Err(e)) => Submitted::Refused(format!("the plugin's run_trial failed: {e}"), false),
                        };
                        done(k, how);
                    }
                }
                Ok(Err(e)) => {
                    let why = format!("the plugin's run_trials failed: {e}");
                    now.iter().for_each(|&k| done(k, Submitted::Refused(why.clone(), false)));
                }
            }
        }
    }

    fn follow(&self, job: &TrialJob) -> Sent {
        Sent(job.stored_points)
    }

    fn poll(&self, jobs: &[&Live<Sent>]) -> Result<Answers, PollError> {
        let refs: Vec<TrialRef> =
            jobs.iter().map(|l| TrialRef { trial_index: l.job.index, metadata: l.meta.clone() }).collect();
        let answers = if self.batch_poll.no() {
            None
        } else {
            tracing::debug!(plugin = %self.plugin, trials = refs.len(), "poll_trials: one call for every running trial");
            let asked = refs.clone();
            match self.guarded("poll_trials", move |c| c.poll_trials(&asked)) {
                Err(CallError::Unsupported) => {
                    self.batch_poll.set_no();
                    None
                }
                Err(e) if e.retry() => return Err(PollError::Retry(format!("the plugin's poll_trials failed: {e}"))),
                Err(e) => return Err(PollError::Fatal(format!("the plugin's poll_trials failed: {e}"))),
                // Trials left out of the answer have no news this round.
                Ok(list) => Some(list.into_iter().map(|t| (t.trial_index, Ok(Some(t.poll)))).collect::<Vec<_>>()),
            }
        };
        let answers = match answers {
            Some(a) => a,
            None => {
                self.poll_each(refs).map_err(|e| PollError::Fatal(format!("the plugin's poll_trial failed: {e}")))?
            }
        };
        Ok(answers
            .into_iter()
            .filter_map(|(i, a)| match a {
                Ok(Some(p)) => Some((i, Ok(state_of(p)))),
                Ok(None) => None,
                Err(e) if e.retry() => {
                    tracing::warn!(trial = i, error = %e, "poll failed; will retry");
                    None
                }
                Err(e) => Some((i, Err(format!("the plugin's poll_trial failed: {e}")))),
            })
            .collect())
    }

    fn progress(&self, jobs: &mut [&mut Live<Sent>]) -> Vec<(u64, Vec<MetricPoint>)> {
        if self.plugin_metrics.is_empty() {
            return Vec::new();
        }
        let asked = jobs.iter().map(|l| (l.job.index, l.meta.clone())).collect();
        let fetched = match self.plugin_metrics.fetch_running(asked) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(plugin = %self.plugin, error = %e, "fetching the learning curves of running trials failed");
                return Vec::new();
            }
        };
        let mut sent: BTreeMap<u64, &mut Sent> = jobs.iter_mut().map(|l| (l.job.index, &mut l.follow)).collect();
        fetched
            .into_iter()
            .filter_map(|(i, mut points)| {
                let s = sent.get_mut(&i)?;
                let new = points.split_off(s.0.min(points.len()));
                s.0 += new.len();
                Some((i, new))
            })
            .collect()
    }

    fn stop(&self, jobs: &[(&Live<Sent>, &str)]) -> Vec<Option<Value>> {
        let asked: Vec<(u64, Value, String)> =
            jobs.iter().map(|(l, r)| (l.job.index, l.meta.clone(), r.to_string())).collect();
        let n = asked.len();
        let r = self.guarded("stop_trial", move |c| {
            Ok(asked
                .into_iter()
                .map(|(i, meta, reason)| match c.stop_trial(i, &meta, &reason) {
                    Ok(v) => Some(v),
                    Err(CallError::Unsupported) => Some(
                        serde_json::json!({"note": "the plugin cannot stop trials (no stop_trial): it may still run"}),
                    ),
                    Err(e) => Some(serde_json::json!({"error": format!("stop_trial failed: {e}")})),
                })
                .collect::<Vec<_>>())
        });
        r.unwrap_or_else(|e| vec![Some(serde_json::json!({"error": format!("stop_trial failed: {e}")})); n])
    }

    fn finish(&self, mut live: Live<Sent>, end: JobState, events: &Sender<RunnerEvent>) -> Option<TrialResult> {
        if let Some(r) = ended_without_results(&end) {
            return Some(r);
        }
        self.complete(&mut live, events).ok()
    }

    fn poll_at_once(&self, live: &Live<Sent>, events: &Sender<RunnerEvent>) -> Option<Option<JobState>> {
        let (index, meta) = (live.job.index, &live.meta);
        match self.watched("poll_trial", &[index], events, |c| c.poll_trial(index, meta)) {
            Ok(Ok(p)) => Some(Some(state_of(p))),
            Err(Abandoned) => Some(None),
            // An error the driver's rounds will meet again, and judge.
            Ok(Err(_)) => None,
        }
    }

    fn poll_retries(&self) -> Option<u32> {
        Some(POLL_RETRIES)
    }

    fn cleanup(&self, dir: &Path, failed: bool) {
        crate::runners::keep_or_remove(self.keep, dir, failed)
    }

    fn stuck(&self) -> usize {
        stuck()
    }
}
