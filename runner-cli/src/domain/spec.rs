//! The checked experiment: what `config` produces from a TOML file and everything above
//! works on. Paths are already resolved against the file's directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Goal, OutcomeConstraint, SearchSpace};

/// A string with placeholders, parsed once: `python3 train.py --lr={lr}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Literal(String),
    Placeholder(String),
}

impl Template {
    /// Substitute each placeholder once (a value that contains `{x}` stays as it is).
    pub fn render(&self, lookup: &dyn Fn(&str) -> String) -> String {
        self.render_nth(&|_, name| lookup(name))
    }

    /// Substitute each placeholder once, told its position among the placeholders.
    pub fn render_nth(&self, lookup: &dyn Fn(usize, &str) -> String) -> String {
        let mut out = String::new();
        let mut n = 0;
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Placeholder(p) => {
                    out.push_str(&lookup(n, p));
                    n += 1;
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepTrialDirs {
    All,
    Failed,
    None,
}

/// `[runner] kind = "command"`: a local process per trial.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// argv templates; with `shell`, one template run by `sh -c`.
    pub argv: Vec<Template>,
    pub shell: bool,
    /// With `shell`: how the value of each placeholder of the template is quoted.
    pub shell_quoting: Vec<super::ShellQuote>,
    pub env: Vec<(String, Template)>,
    /// Default: the experiment file's directory.
    pub workdir: Option<Template>,
    pub timeout: Option<Duration>,
    pub stop_grace: Duration,
    pub keep_trial_dirs: KeepTrialDirs,
    /// The key that marks a report as a point of a learning curve.
    pub progression: String,
    /// `file:line:col: `runner.command``, for errors found after parsing.
    pub origin: String,
}

/// A runner or metric in a plugin library: `library` + `name` + `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRef {
    /// Resolved against the experiment file's directory.
    pub library: PathBuf,
    /// A library named without a directory (`liboptx_foo.so`, or `optx_foo`): when it is not
    /// in the experiment's directory, it is looked for along `OPTX_PLUGIN_PATH` and beside
    /// the optx binary.
    pub by_name: Option<String>,
    pub name: String,
    /// The `config` table, handed to the plugin as JSON.
    pub config: serde_json::Value,
    /// `file:line:col` of the entry, for errors found when the library is loaded.
    pub origin: String,
}

/// `[runner] kind = "plugin"`: a runner in a cdylib implementing the optx plugin ABI.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub plugin: PluginRef,
    /// A plugin call that does not return in time fails its trial.
    pub call_timeout: Duration,
    pub keep_trial_dirs: KeepTrialDirs,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunnerSpec {
    Command(CommandSpec),
    Plugin(PluginSpec),
    /// `kind = "external"` and its preset `kind = "slurm"`.
    External(ExternalSpec),
}

/// What a word of a job system's status means (`status_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobWord {
    Staged,
    Running,
    Completed,
    Failed,
    Abandoned,
    /// Ended through no fault of the trial (preempted, node failure): it runs again.
    Lost,
}

/// How the jobs of an external runner are submitted, polled and cancelled.
#[derive(Debug, Clone)]
pub enum JobSystem {
    /// `kind = "external"`: the user's commands.
    Commands {
        submit: Vec<Template>,
        /// For one job (`{job_id}`).
        status: Option<Vec<Template>>,
        /// For all live jobs at once (`{job_ids}`).
        status_all: Option<Vec<Template>>,
        /// Words of the system, lower-cased, and what they mean.
        status_map: Vec<(String, JobWord)>,
        cancel: Option<Vec<Template>>,
        job_id_regex: regex::Regex,
    },
    /// `kind = "slurm"`: sbatch, squeue, scontrol or sacct, scancel.
    Slurm {
        /// The batch script (resolved against the experiment file's directory), or
        script: Option<Template>,
        /// a command for `sbatch --wrap`.
        command: Option<Vec<Template>>,
        sbatch_args: Vec<Template>,
    },
}

/// `[runner] kind = "external" | "slurm"`: jobs on another system.
#[derive(Debug, Clone)]
pub struct ExternalSpec {
    pub system: JobSystem,
    /// Commands run by `sh -c` (their substituted values shell-quoted).
    pub shell: bool,
    pub env: Vec<(String, Template)>,
    /// Where the commands run (default: the experiment file's directory).
    pub workdir: Option<Template>,
    pub keep_trial_dirs: KeepTrialDirs,
    pub progression: String,
}

impl PartialEq for ExternalSpec {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

/// `[metrics.NAME]`: how to read a metric when the default protocol won't do.
#[derive(Debug, Clone)]
pub enum MetricRule {
    /// Searched in each stdout line; the first capture group is the value.
    Regex(regex::Regex),
    /// A JSON pointer into a file the trial writes (relative to its trial dir).
    File { path: String, pointer: String },
    /// Fetched from a plugin's metric.
    Plugin(PluginRef),
    /// No rule: the default protocol (result file, JSON lines, name=value).
    Default,
}

impl PartialEq for MetricRule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MetricRule::Regex(a), MetricRule::Regex(b)) => a.as_str() == b.as_str(),
            (MetricRule::File { path: a, pointer: p }, MetricRule::File { path: b, pointer: q }) => a == b && p == q,
            (MetricRule::Plugin(a), MetricRule::Plugin(b)) => a == b,
            (MetricRule::Default, MetricRule::Default) => true,
            _ => false,
        }
    }
}

/// The environment variable a parameter reaches a trial as: `OPTX_PARAM_` and its name
/// upper-cased, other characters than letters and digits as `_`.
pub fn param_env_var(name: &str) -> String {
    let var: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("OPTX_PARAM_{var}")
}

/// The most trials at once: local processes (one machine), and trials that run elsewhere.
pub const MAX_LOCAL_PARALLELISM: usize = 1024;
pub const MAX_PARALLELISM: usize = 10_000;

/// The largest magnitude of an int parameter's bounds: every integer up to it is exact
/// as a float, which the models and the unit cube use.
pub const MAX_INT_BOUND: i64 = 1 << 53;

#[derive(Debug, Clone, PartialEq)]
pub struct Orchestration {
    pub max_trials: u64,
    pub parallelism: usize,
    pub tolerated_trial_failure_rate: f64,
    pub min_failed_trials_for_failure_rate_check: u64,
    pub initial_seconds_between_polls: f64,
    pub seconds_between_polls_backoff_factor: f64,
    pub max_seconds_between_polls: f64,
    pub ttl_seconds_for_trials: Option<f64>,
    pub timeout_hours: Option<f64>,
    pub retries_per_failed_arm: u32,
    pub max_pending_trials: Option<usize>,
    pub max_cost: Option<f64>,
    /// Deploy the candidates of one decision in one runner call (plugin runners).
    pub run_trials_in_batches: bool,
    /// A worker renews its lease every third of this; one silent this long is dead.
    pub worker_lease_seconds: f64,
    /// The most trials this worker creates (`run --join --max-trials-per-worker`, not a
    /// key of the file).
    pub max_trials_per_worker: Option<u64>,
    /// `run --detach` (not a key of the file): deploy up to `parallelism` trials, record
    /// them and end, leaving them to a later resume.
    pub detach: bool,
    /// `resume --ignore-global-stopping` (not a key of the file).
    pub ignore_global_stopping: bool,
}

impl Orchestration {
    /// The environment variable a parameter reaches a trial as: `OPTX_PARAM_` and its name
    /// upper-cased, other characters than letters and digits as `_`.
    pub fn param_env_var(name: &str) -> String {
        let var: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("OPTX_PARAM_{var}")
    }

    /// The most trials at once for a runner: `Err` says why a value is too many.
    pub fn check_parallelism(n: u64, local: bool) -> Result<(), String> {
        let (max, why) = if local {
            (MAX_LOCAL_PARALLELISM, "local processes on one machine (the command runner)")
        } else {
            (MAX_PARALLELISM, "trials at once")
        };
        if n == 0 || n > max as u64 {
            Err(format!("must be between 1 and {max} {why}, not {n}"))
        } else {
            Ok(())
        }
    }
}

impl Default for Orchestration {
    fn default() -> Self {
        Orchestration {
            max_trials: 0,
            parallelism: 1,
            tolerated_trial_failure_rate: 0.5,
            min_failed_trials_for_failure_rate_check: 5,
            initial_seconds_between_polls: 1.0,
            seconds_between_polls_backoff_factor: 1.5,
            max_seconds_between_polls: 60.0,
            ttl_seconds_for_trials: None,
            timeout_hours: None,
            retries_per_failed_arm: 0,
            max_pending_trials: None,
            worker_lease_seconds: 60.0,
            max_trials_per_worker: None,
            detach: false,
            ignore_global_stopping: false,
            max_cost: None,
            run_trials_in_batches: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationMethod {
    Auto,
    Bayesian,
    Sobol,
    Random,
    Grid,
}

impl GenerationMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationMethod::Auto => "auto",
            GenerationMethod::Bayesian => "bayesian",
            GenerationMethod::Sobol => "sobol",
            GenerationMethod::Random => "random",
            GenerationMethod::Grid => "grid",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSpec {
    pub method: GenerationMethod,
    /// For `auto`: the center point, then Sobol up to this many (default 5, whatever the
    /// dimension, as Ax 1.x starts).
    pub initial_trials: Option<u64>,
    /// Known settings run first, already rounded onto the space.
    pub initial_points: Vec<super::Arm>,
    pub grid_resolution: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: every commit survives a crash of optx.
    Normal,
    /// `synchronous = FULL`: every commit survives power loss too.
    Fsync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub seed: Option<u64>,
    pub space: SearchSpace,
    /// What is optimized: one objective or several.
    pub goal: Goal,
    pub outcome_constraints: Vec<OutcomeConstraint>,
    /// Every metric the experiment keeps: objective, constraints, `[metrics.X]`, `cost`.
    pub metrics: BTreeMap<String, MetricRule>,
    pub runner: RunnerSpec,
    pub orchestration: Orchestration,
    pub generation: GenerationSpec,
    pub store: super::StoreLocation,
    pub durability: Durability,
    /// The directory of the experiment file: relative paths are relative to it.
    pub base_dir: PathBuf,
    /// What looks wrong but is allowed, each as `file:line:col: message`.
    pub warnings: Vec<String>,
    /// `[early_stopping]`.
    pub early_stopping: Option<EarlyStopping>,
    /// `[global_stopping]`.
    pub global_stopping: Option<GlobalStopping>,
}

impl ExperimentSpec {
    /// Metrics a trial must report to complete: the objectives' and constrained ones.
    pub fn required_metrics(&self) -> Vec<&str> {
        let mut v = self.goal.metrics();
        for c in &self.outcome_constraints {
            if !v.contains(&c.metric.as_str()) {
                v.push(&c.metric);
            }
        }
        v
    }

    /// The trial dirs live beside a file store (`<store name>.trials/`); those of a server
    /// store in `.optx/<experiment>.server.trials/` beside the experiment file, on each
    /// worker's host.
    pub fn trials_root(&self) -> PathBuf {
        match &self.store {
            super::StoreLocation::File(path) => {
                let stem =
                    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| self.name.clone());
                path.with_file_name(format!("{stem}.trials"))
            }
            // Never a file store's dirs (those of the same experiment run locally): a
            // server store's own, named by its experiment there.
            super::StoreLocation::Server { experiment, .. } => {
                let name = experiment.as_deref().unwrap_or(&self.name);
                self.base_dir.join(".optx").join(format!("{name}.server.trials"))
            }
        }
    }

    /// `auto`'s number of initial (center + Sobol) trials.
    pub fn initial_trials(&self) -> u64 {
        self.generation.initial_trials.unwrap_or(DEFAULT_INITIAL_TRIALS)
    }
}

/// The initial trials of `auto` when the file says none: the center and 4 Sobol points,
/// whatever the dimension (Ax 1.x's Client); on six dimensions this beats 2 × dims.
pub const DEFAULT_INITIAL_TRIALS: u64 = 5;

/// `[early_stopping]`: a rule (see the `stopping` module) on one metric's learning curves.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub metric: String,
    pub rule: StopRule,
    pub options: StopOptions,
}

/// An early-stopping rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopRule {
    /// Stop a trial worse than this percentile of the trials with data at its progression.
    Percentile { threshold: f64 },
    /// Stop a trial worse than this value.
    Threshold { value: f64 },
    /// Successive halving on rungs `min_resource * reduction_factor^k` up to `max_resource`:
    /// a trial reaching a rung goes on only in the top 1/`reduction_factor` of those there.
    Asha { min_resource: f64, max_resource: f64, reduction_factor: f64 },
}

/// Options of every rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopOptions {
    pub minimize: bool,
    pub min_progression: Option<f64>,
    pub max_progression: Option<f64>,
    pub min_curves: usize,
    pub patience: f64,
    pub protect_best: usize,
    pub interval: Option<f64>,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            minimize: true,
            min_progression: None,
            max_progression: None,
            min_curves: 5,
            patience: 0.0,
            protect_best: 0,
            interval: None,
        }
    }
}

/// `[global_stopping]`: when the whole run has stopped improving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GlobalStopping {
    /// Ax's improvement rule: the best of the last `window_size` trials improves on the best
    /// before them by less than `improvement_bar` times the interquartile range.
    Improvement { min_trials: usize, window_size: usize, improvement_bar: f64 },
    /// `patience` trials in a row without a new best.
    NoImprovement { min_trials: usize, patience: usize },
    /// The objective reached `value`.
    Target { min_trials: usize, value: f64 },
}
