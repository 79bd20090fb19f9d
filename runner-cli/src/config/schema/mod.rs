//! The JSON Schema (draft 2020-12) of the experiment file, for editors (taplo, VS Code's Even
//! Better TOML) and `optx schema`. The types below mirror the format of CONFIG.md as the
//! walker of this module reads it; they exist for the schema only (the walker reads the
//! file, with positions for its errors). Tests check that every key the walker knows is in
//! the schema and that every example validates against it.

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// An experiment file of optx.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "optx experiment")]
#[allow(dead_code)]
pub struct ExperimentFile {
    experiment: Experiment,
    /// The search space, in the order of the file: a parameter per key.
    parameters: BTreeMap<String, Parameter>,
    objective: Objective,
    constraints: Option<Constraints>,
    runner: Runner,
    /// How to read a metric when the default output protocol will not do.
    metrics: Option<BTreeMap<String, MetricRule>>,
    orchestration: Orchestration,
    generation: Option<Generation>,
    storage: Option<Storage>,
    early_stopping: Option<EarlyStopping>,
    global_stopping: Option<GlobalStopping>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Experiment {
    /// Letters, digits, `_`, `.` and `-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    name: String,
    description: Option<String>,
    owner: Option<String>,
    /// The same seed and the same results give the same candidates.
    #[schemars(range(min = 0))]
    seed: Option<i64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Scaling {
    Linear,
    Log,
}

/// A scalar value: a string, a number or a boolean.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
enum Parameter {
    /// A real in [low, high].
    Float {
        bounds: [f64; 2],
        scaling: Option<Scaling>,
        /// Values lo + k*step only.
        #[schemars(range(min = 0.0))]
        step: Option<f64>,
        /// Significant digits of proposed values (default 6).
        #[schemars(range(min = 1, max = 17))]
        digits: Option<u32>,
    },
    /// An integer in [low, high], both included.
    Int {
        bounds: [i64; 2],
        scaling: Option<Scaling>,
        #[schemars(range(min = 1))]
        step: Option<i64>,
    },
    /// One of `values`, all of one kind.
    Choice {
        #[schemars(length(min = 1))]
        values: Vec<Scalar>,
        /// Searched by their order (default false).
        ordered: Option<bool>,
    },
    /// Never searched, always passed to the trial.
    Fixed { value: Scalar },
}

/// A metric name, or a linear expression of metric names.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Goal {
    One(String),
    /// Several objectives: the result is a Pareto front.
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Objective {
    minimize: Option<Goal>,
    maximize: Option<Goal>,
    /// The reference point of several objectives: `"latency_ms <= 200"`.
    thresholds: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Constraints {
    /// Linear inequalities over float and int parameters: `"a + 2*b <= 3.5"`.
    parameters: Option<Vec<String>>,
    /// `"metric <= bound"` or `"metric >= bound"`: a trial that violates one is infeasible.
    outcomes: Option<Vec<String>>,
}

/// A command: an argv array (preferred), or a string split as a shell would.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Argv {
    Words(Vec<String>),
    Line(String),
}

/// A duration: "90s", "30m", "2h", "1d", or seconds.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Duration {
    Text(String),
    Seconds(f64),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum KeepTrialDirs {
    All,
    Failed,
    None,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum CommandKind {
    Command,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ExternalKind {
    External,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum SlurmKind {
    Slurm,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum PluginKind {
    Plugin,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum JobWord {
    Staged,
    Running,
    Completed,
    Failed,
    Abandoned,
    Lost,
}

/// How trials run.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Runner {
    Command(CommandRunner),
    External(ExternalRunner),
    Slurm(SlurmRunner),
    Plugin(PluginRunner),
}

/// A local process per trial (an existing script).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CommandRunner {
    kind: Option<CommandKind>,
    /// Placeholders: {<parameter>}, {trial}, {trial_dir}, {experiment}, {params_file}, {slot}.
    command: Argv,
    /// Run the command by `sh -c`, every value shell-quoted.
    shell: Option<bool>,
    env: Option<BTreeMap<String, Scalar>>,
    /// Default: the experiment file's directory.
    workdir: Option<String>,
    timeout: Option<Duration>,
    /// SIGTERM to the process group, then SIGKILL after this (default "10s").
    stop_grace: Option<Duration>,
    keep_trial_dirs: Option<KeepTrialDirs>,
    /// The key that marks a report as a point of a learning curve (default "step").
    progression: Option<String>,
}

/// Asynchronous jobs on another system, through commands.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ExternalRunner {
    kind: ExternalKind,
    /// Its output yields the job id (`job_id_regex`, default: the first word).
    submit: Argv,
    /// The status of one job ({job_id}).
    status: Option<Argv>,
    /// The status of every live job at once ({job_ids}).
    status_all: Option<Argv>,
    status_map: Option<BTreeMap<String, JobWord>>,
    cancel: Option<Argv>,
    job_id_regex: Option<String>,
    shell: Option<bool>,
    env: Option<BTreeMap<String, Scalar>>,
    workdir: Option<String>,
    keep_trial_dirs: Option<KeepTrialDirs>,
    progression: Option<String>,
}

/// The `external` runner preset for Slurm.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SlurmRunner {
    kind: SlurmKind,
    /// The batch script (or `command`).
    script: Option<String>,
    command: Option<Argv>,
    sbatch_args: Option<Vec<String>>,
    shell: Option<bool>,
    env: Option<BTreeMap<String, Scalar>>,
    workdir: Option<String>,
    keep_trial_dirs: Option<KeepTrialDirs>,
    progression: Option<String>,
}

/// A cdylib implementing the optx plugin ABI.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PluginRunner {
    kind: PluginKind,
    /// The library, relative to this file.
    library: String,
    name: String,
    /// Handed to the plugin as JSON.
    config: Option<BTreeMap<String, serde_json::Value>>,
    call_timeout: Option<Duration>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PluginRef {
    library: String,
    name: String,
    config: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MetricRule {
    /// Its first capture group, searched in each stdout line.
    regex: Option<String>,
    /// A JSON file the trial writes (with `pointer`).
    file: Option<String>,
    pointer: Option<String>,
    plugin: Option<PluginRef>,
}

/// Names follow Ax's `run_trials` and Orchestrator options.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Orchestration {
    #[schemars(range(min = 1))]
    max_trials: u64,
    #[schemars(range(min = 1))]
    parallelism: Option<u64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    tolerated_trial_failure_rate: Option<f64>,
    min_failed_trials_for_failure_rate_check: Option<u64>,
    #[schemars(range(min = 0.0))]
    initial_seconds_between_polls: Option<f64>,
    #[schemars(range(min = 1.0))]
    seconds_between_polls_backoff_factor: Option<f64>,
    #[schemars(range(min = 0.0))]
    max_seconds_between_polls: Option<f64>,
    #[schemars(range(min = 0.0))]
    ttl_seconds_for_trials: Option<f64>,
    #[schemars(range(min = 0.0))]
    timeout_hours: Option<f64>,
    retries_per_failed_arm: Option<u64>,
    #[schemars(range(min = 1))]
    max_pending_trials: Option<u64>,
    #[schemars(range(min = 0.0))]
    max_cost: Option<f64>,
    run_trials_in_batches: Option<bool>,
    #[schemars(range(min = 0.0))]
    worker_lease_seconds: Option<f64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Method {
    Auto,
    Bayesian,
    Sobol,
    Random,
    Grid,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Generation {
    method: Option<Method>,
    /// Default 5: the center point, then Sobol points.
    initial_trials: Option<u64>,
    /// Known settings run first (missing keys: the center).
    initial_points: Option<Vec<BTreeMap<String, Scalar>>>,
    #[schemars(range(min = 1))]
    grid_resolution: Option<u64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Durability {
    Normal,
    Fsync,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Storage {
    /// Default: .optx/<name>.db next to this file.
    path: Option<String>,
    /// A server database (postgresql://...): workers on many hosts.
    url: Option<String>,
    durability: Option<Durability>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum StopStrategy {
    Percentile,
    Threshold,
    Asha,
}

/// Stop running trials whose learning curves fall behind.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EarlyStopping {
    strategy: Option<StopStrategy>,
    /// Default: the objective, when there is one.
    metric: Option<String>,
    #[schemars(range(min = 0.0, max = 100.0))]
    percentile_threshold: Option<f64>,
    metric_threshold: Option<f64>,
    min_progression: Option<f64>,
    max_progression: Option<f64>,
    #[schemars(range(min = 1))]
    min_curves: Option<u64>,
    #[schemars(range(min = 0.0))]
    patience: Option<f64>,
    protect_best: Option<u64>,
    #[schemars(range(min = 0.0))]
    interval: Option<f64>,
    #[schemars(range(min = 0.0))]
    min_resource: Option<f64>,
    #[schemars(range(min = 0.0))]
    max_resource: Option<f64>,
    #[schemars(range(min = 1.0))]
    reduction_factor: Option<f64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum GlobalStrategy {
    Improvement,
    NoImprovement,
    Target,
}

/// End the whole run when it has stopped improving.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct GlobalStopping {
    strategy: Option<GlobalStrategy>,
    min_trials: Option<u64>,
    window_size: Option<u64>,
    improvement_bar: Option<f64>,
    patience: Option<u64>,
    value: Option<f64>,
}

/// The schema as JSON.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ExperimentFile)).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests;
