//! L2: adapters behind the trait the scheduler sees, [`TrialRunner`].
//!
//! A runner deploys trials on the scheduler's workers (or re-attaches to ones that were
//! running when optx stopped) and reports through [`RunnerEvent`]s. The command runner
//! follows its local process on the worker until it ends (its end is an event, not
//! polled). Runners whose trials live elsewhere (plugin, external, slurm) are [`driver`]s:
//! their workers only deploy, and one loop, on a thread the scheduler starts for it,
//! polls all their live jobs in one round. A runner never writes the store: the dispatcher
//! does, before acting.

mod command;
pub mod driver;
pub mod external;
mod hint;
pub mod output;
pub mod plugin;
pub mod program;
mod tail;
pub(crate) mod verdict;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

pub use command::CommandRunner;
pub use output::MetricPoint;
pub use plugin::{plugin_runner, PluginMetrics, PluginRunner};

use crate::domain::Arm;

/// One trial handed to a worker.
#[derive(Debug, Clone)]
pub struct TrialJob {
    pub index: u64,
    pub arm: Arm,
    pub slot: usize,
    pub trial_dir: PathBuf,
    /// Run metadata of a trial that was running when optx stopped: re-attach to it.
    pub attach: Option<serde_json::Value>,
    /// When the trial started (for the timeout of a re-attached trial).
    pub started_at: Option<SystemTime>,
    /// The trial's identity in the records it leaves (store id and index).
    pub token: String,
    /// Points of its learning curves the store holds already (a re-attached trial).
    pub stored_points: usize,
}

/// Work a runner hands to one of the scheduler's workers (reading an ended job's results).
pub type Task = Box<dyn FnOnce() + Send>;

/// The dispatcher's end of a trial's control channel. A runner whose trials are followed
/// by one driver loop is woken by each control too (it cannot wait on every trial's
/// channel at once).
#[derive(Clone)]
pub struct ControlTx {
    tx: Sender<Control>,
    wake: Option<Sender<()>>,
}

impl ControlTx {
    pub fn send(&self, c: Control) {
        let _ = self.tx.send(c);
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

/// A trial's control channel; `wake` is the runner's [`TrialRunner::waker`].
pub fn control_channel(wake: Option<Sender<()>>) -> (ControlTx, Receiver<Control>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (ControlTx { tx, wake }, rx)
}

/// What the dispatcher can tell a running trial.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop it (TERM, grace, KILL); `lost` if its outcome is not the trial's fault.
    Stop { reason: String, lost: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    Failed {
        reason: String,
        lost: bool,
    },
    /// Given up on by the runner for a reason outside the trial (ABANDONED).
    Abandoned {
        reason: String,
    },
}

/// How a trial ended, with every final value that could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialResult {
    pub outcome: Outcome,
    pub finals: Vec<MetricPoint>,
    /// Points of learning curves not yet sent as `Progress`.
    pub curve: Vec<MetricPoint>,
    pub stop_metadata: Option<serde_json::Value>,
    /// A note beside a completion (e.g. an exit status that could not be known).
    pub note: Option<String>,
}

impl TrialResult {
    /// A trial that ended without results; `lost` if that is not the trial's fault.
    pub fn failed(reason: String, lost: bool) -> Self {
        TrialResult {
            outcome: Outcome::Failed { reason, lost },
            finals: Vec::new(),
            curve: Vec::new(),
            stop_metadata: None,
            note: None,
        }
    }
}

/// Events from workers to the dispatcher.
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    /// The trial runs; `run_metadata` lets a restarted optx find it again.
    Deployed {
        index: u64,
        run_metadata: serde_json::Value,
    },
    /// Intermediate points of a learning curve.
    Progress {
        index: u64,
        points: Vec<MetricPoint>,
    },
    Finished {
        index: u64,
        result: TrialResult,
    },
    /// Something the user should know about the runner itself.
    Notice(String),
}

/// What became of a trial that was recorded but had not started when optx last stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Unstarted {
    /// It never ran, and now never will: deploy it as it is.
    Never,
    /// It started after all: follow it with this run metadata.
    Started(serde_json::Value),
    /// Nobody can tell: it is lost (and runs again as a new trial).
    Unknown(String),
}

/// The value of a placeholder of the runner's templates for a trial: `{trial}`,
/// `{trial_dir}`, `{experiment}`, `{params_file}`, `{slot}`, or a parameter.
pub fn placeholder(job: &TrialJob, experiment: &str, name: &str) -> String {
    match name {
        "trial" => job.index.to_string(),
        "trial_dir" => job.trial_dir.to_string_lossy().into_owned(),
        "experiment" => experiment.to_string(),
        "params_file" => job.trial_dir.join("params.json").to_string_lossy().into_owned(),
        "slot" => job.slot.to_string(),
        p => job.arm.get(p).map(|v| v.to_string()).unwrap_or_default(),
    }
}

/// What every trial sees in its environment: its index, dir, slot, experiment, parameters
/// (as JSON, a file, and one variable each) and result file.
pub fn trial_env(job: &TrialJob, experiment: &str) -> Vec<(String, String)> {
    let dir = job.trial_dir.to_string_lossy().into_owned();
    let mut env = vec![
        ("OPTX_TRIAL_INDEX".to_string(), job.index.to_string()),
        ("OPTX_TRIAL_DIR".to_string(), dir.clone()),
        ("OPTX_SLOT".to_string(), job.slot.to_string()),
        ("OPTX_EXPERIMENT".to_string(), experiment.to_string()),
        ("OPTX_PARAMS".to_string(), job.arm.to_json().to_string()),
        ("OPTX_PARAMS_FILE".to_string(), format!("{dir}/params.json")),
        ("OPTX_RESULT_FILE".to_string(), format!("{dir}/result.json")),
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
    ];
    for (name, v) in &job.arm.values {
        env.push((crate::domain::param_env_var(name), v.to_string()));
    }
    env
}

/// Remove a trial's dir after its end is committed, as `keep_trial_dirs` says.
pub fn keep_or_remove(keep: crate::domain::KeepTrialDirs, dir: &std::path::Path, failed: bool) {
    use crate::domain::KeepTrialDirs;
    let remove = match keep {
        KeepTrialDirs::All => false,
        KeepTrialDirs::Failed => !failed,
        KeepTrialDirs::None => true,
    };
    if remove {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Polling intervals: start, growth while nothing changes, cap.
#[derive(Debug, Clone, Copy)]
pub struct PollSchedule {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl PollSchedule {
    /// The wait after `current`: backed off by `factor`, within [`initial`, `max`]. It grows
    /// from at least a millisecond, so `initial_seconds_between_polls = 0` polls at once
    /// first, then backs off, and never spins a core.
    pub fn next(&self, current: Duration) -> Duration {
        current
            .max(Duration::from_millis(1))
            .mul_f64(self.factor.max(1.0))
            .min(self.max.max(Duration::from_millis(1)))
            .max(self.initial)
    }
}

pub trait TrialRunner: Send + Sync {
    /// Deploy (or re-attach to) `job` and follow it to its end, sending events; the last
    /// event is always `Finished`.
    fn execute(&self, job: TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>);

    /// Settle a trial recorded as CANDIDATE (or STAGED: its deployment began) that has no
    /// run metadata, on resume. The default suits runners whose deployment leaves no trace
    /// to look for: a candidate never started, a staged trial cannot be told.
    fn unstarted(&self, _job: &TrialJob, staged: bool) -> Unstarted {
        if staged {
            Unstarted::Unknown("optx stopped while deploying this trial".into())
        } else {
            Unstarted::Never
        }
    }

    /// Called after a trial's end is committed: keep or remove what it left.
    fn cleanup(&self, job_dir: &std::path::Path, failed: bool);

    /// Deploy `jobs` in one call (`run_trials_in_batches`): for each, send `Deployed` (the
    /// scheduler then hands it back to `execute` to follow, with its run metadata) or a
    /// `Finished` that says why it was not deployed.
    fn deploy_batch(&self, jobs: Vec<TrialJob>, events: &Sender<RunnerEvent>) {
        for job in jobs {
            let result = TrialResult::failed("this runner does not deploy in batches".into(), false);
            let _ = events.send(RunnerEvent::Finished { index: job.index, result });
        }
    }

    /// No more trials will be deployed in this process.
    fn close(&self);

    /// Workers blocked for good in a call that will not return (a plugin call past its
    /// `call_timeout`): the scheduler starts as many new ones.
    fn stuck(&self) -> usize {
        0
    }

    /// Workers the scheduler runs for `parallelism` trials: one per trial for a runner that
    /// follows its trial on the worker (a local process), a few for a driven runner, whose
    /// workers only deploy.
    fn workers(&self, parallelism: usize) -> usize {
        parallelism
    }

    /// A driven runner's wake-up for its loop, given to each trial's [`ControlTx`].
    fn waker(&self) -> Option<Sender<()>> {
        None
    }

    /// The loop of a runner whose trials live elsewhere, which follows them all: run by
    /// the scheduler on a thread of its own; it returns once [`close`](Self::close) is
    /// called. `spawn` hands a task to one of the scheduler's workers. Runners without one
    /// return at once.
    fn drive(&self, _spawn: &dyn Fn(Task)) {}

    fn driven(&self) -> bool {
        self.waker().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_from_their_first_wait_and_never_spin() {
        let ms = Duration::from_millis;
        let p = PollSchedule { initial: ms(0), factor: 2.0, max: ms(5) };
        let mut w = p.initial;
        let waits: Vec<Duration> = (0..5)
            .map(|_| {
                w = p.next(w);
                w
            })
            .collect();
        assert_eq!(waits, [ms(2), ms(4), ms(5), ms(5), ms(5)]);
        // No backoff and no first wait: still a millisecond between polls.
        let flat = PollSchedule { initial: ms(0), factor: 1.0, max: ms(0) };
        assert_eq!(flat.next(ms(0)), ms(1));
        // Ax's defaults: 1 s, x1.5, at most 10 s.
        let ax = PollSchedule { initial: ms(1000), factor: 1.5, max: ms(10_000) };
        assert_eq!(ax.next(ms(1000)), ms(1500));
        assert_eq!(ax.next(ms(8000)), ms(10_000));
    }
}
