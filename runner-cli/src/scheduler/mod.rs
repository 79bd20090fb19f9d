//! L3: the closed loop.
//!
//! One dispatcher thread owns the run state and is the only writer to the store. A pool
//! of worker threads runs trials through the runner (`TrialRunner`); workers send
//! events (`RunnerEvent`), and the dispatcher `select!`s over them, a signal channel and the
//! run's deadline. Every transition and observation is committed before the dispatcher
//! reports it or acts on it (events that arrive together share one transaction).
//!
//! Accounting (CONFIG.md "Trial lifecycle and accounting"): a *lost* trial (its outcome
//! unknowable through no fault of its own) does not count toward `max_trials` nor the
//! failure rate, and its arm runs again as a new trial; everything else counts.
//!
//! Files: `dispatcher` (the loop and its wake-ups), `state` (the run state and how worker
//! events change it), `feed` (what other workers changed, read at each wake-up), `stop` (why deployment stops, ranked; pure), `resume` (what became of
//! the trials that had not ended), `pool` (the worker threads), `launch` (the store, its
//! ownership, the runner and the signals, before the loop).

mod actors;
mod clean;
mod dispatcher;
mod feed;
mod launch;
mod pool;
mod resume;
mod state;
mod stop;
#[cfg(test)]
mod tests;

pub use actors::{arm_of, ask, attach, tell, Asked, Reported, Tell, Told};
pub use clean::clean;
pub(crate) use dispatcher::{drive, Interrupts};
pub use launch::{launch, worker_alive, Launch, RunError};

/// What the run tells whoever watches it (the CLI prints these).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Started {
        name: String,
        store: crate::domain::StoreLocation,
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
    /// Stopped by the early-stopping rule.
    EarlyStopped {
        index: u64,
        reason: String,
    },
    Notice(String),
    /// A running trial's newest point of a learning curve (for a progress line).
    Progress {
        index: u64,
        progression: f64,
        metric: String,
        value: f64,
    },
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
    /// `run --detach`: this many trials were deployed and run on without optx.
    Detached(usize),
    /// `timeout_hours` passed, and `stop_grace` after it: this many running trials were
    /// left to a resume.
    Deadline(usize),
}
