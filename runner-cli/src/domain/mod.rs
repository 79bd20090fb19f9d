//! L0: the pure types and rules of an experiment. No I/O, no optx imports.
//!
//! Everything above builds on these: the search space and its transforms from the unit
//! cube, the trial lifecycle with its allowed transitions, objectives and outcome
//! constraints, and the checked [`ExperimentSpec`] that `config` produces.

mod location;
mod outcome;
mod shell;
mod space;
mod spec;
mod trial;
mod value;

pub use location::{is_server_url, redact_url, StoreLocation};
pub use outcome::{Direction, Goal, Objective, OutcomeConstraint, Point, Relation};
pub use shell::{shell_quote, shell_quoting, ShellQuote};
pub use space::{round_digits, Arm, Domain, LinearConstraint, Parameter, SearchSpace, DEFAULT_DIGITS};
pub use spec::{
    param_env_var, CommandSpec, Durability, EarlyStopping, ExperimentSpec, ExternalSpec, GenerationMethod,
    GenerationSpec, GlobalStopping, JobSystem, JobWord, KeepTrialDirs, MetricRule, Orchestration, PluginRef,
    PluginSpec, RunnerSpec, Segment, StopOptions, StopRule, Template, DEFAULT_INITIAL_TRIALS, MAX_INT_BOUND,
    MAX_LOCAL_PARALLELISM, MAX_PARALLELISM,
};
pub use trial::{best_trials, final_values, Observation, TransitionError, Trial, TrialStatus};
pub use value::Value;
