//! The values that cross the boundary, as JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a runner gets to deploy a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialContext {
    pub trial_index: u64,
    /// Parameter values by name, typed as the search space declares them.
    pub parameters: Map<String, Value>,
    /// A directory that belongs to this trial (it exists when `run_trial` is called).
    pub trial_dir: String,
    pub experiment: String,
    /// Which of the `parallelism` slots the trial occupies (0-based).
    pub slot: usize,
    /// `[runner] config = { ... }` from the experiment file.
    pub config: Value,
}

impl TrialContext {
    /// A parameter as a number (ints and floats alike).
    pub fn number(&self, name: &str) -> Option<f64> {
        self.parameters.get(name).and_then(Value::as_f64)
    }
}

/// A trial's status as the runner sees it (Ax's `TrialStatus` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted, not started yet (queued).
    Staged,
    Running,
    Completed,
    Failed,
    /// Given up on for a reason outside the trial (e.g. the arm is no longer wanted).
    Abandoned,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Abandoned)
    }
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Poll {
    pub fn staged() -> Self {
        Poll { status: Status::Staged, reason: None }
    }
    pub fn running() -> Self {
        Poll { status: Status::Running, reason: None }
    }
    pub fn completed() -> Self {
        Poll { status: Status::Completed, reason: None }
    }
    pub fn failed(reason: impl Into<String>) -> Self {
        Poll { status: Status::Failed, reason: Some(reason.into()) }
    }
    pub fn abandoned(reason: impl Into<String>) -> Self {
        Poll { status: Status::Abandoned, reason: Some(reason.into()) }
    }
}

/// One trial's status in a batch poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialPoll {
    pub trial_index: u64,
    #[serde(flatten)]
    pub poll: Poll,
}

/// A trial and its run metadata, as handed to poll, stop and fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRef {
    pub trial_index: u64,
    pub metadata: Value,
}

/// One observed value of a metric: `progression` (a step, an epoch) for a point of a
/// learning curve, none for a final value; `sem` when the trial knows its noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    #[serde(default)]
    pub progression: Option<f64>,
    pub mean: f64,
    #[serde(default)]
    pub sem: Option<f64>,
}

impl Observation {
    pub fn new(mean: f64) -> Self {
        Observation { progression: None, mean, sem: None }
    }
    pub fn at(mut self, progression: f64) -> Self {
        self.progression = Some(progression);
        self
    }
    pub fn with_sem(mut self, sem: f64) -> Self {
        self.sem = Some(sem);
        self
    }
}

/// A failed call. `retry`: the same call may succeed later (a metric not ready yet, a
/// service briefly down); otherwise the trial fails with `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub message: String,
    #[serde(default)]
    pub retry: bool,
    /// The operation is not implemented (the answer `OPTX_UNSUPPORTED`).
    #[serde(skip)]
    unsupported: bool,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error { message: message.into(), retry: false, unsupported: false }
    }
    /// An error worth retrying later.
    pub fn transient(message: impl Into<String>) -> Self {
        Error { message: message.into(), retry: true, unsupported: false }
    }
    /// The operation is not implemented by this runner or metric.
    pub fn unsupported() -> Self {
        Error { message: "not supported by this plugin".into(), retry: false, unsupported: true }
    }
    pub fn is_unsupported(&self) -> bool {
        self.unsupported
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

/// What `open` gets: which runner or metric, and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// "runner" or "metric".
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub experiment: String,
}
