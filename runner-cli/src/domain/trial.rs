//! The trial lifecycle, with Ax's names and stable integer codes.
//!
//! `CANDIDATE -> STAGED -> RUNNING -> COMPLETED | FAILED | EARLY_STOPPED`; `ABANDONED` from
//! any non-terminal state; `FAILED` also straight from CANDIDATE or STAGED when deployment
//! itself fails. Any other transition is a bug and is refused.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialStatus {
    Candidate,
    Staged,
    Failed,
    Completed,
    Running,
    Abandoned,
    EarlyStopped,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionError {
    pub from: TrialStatus,
    pub to: TrialStatus,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a trial cannot go from {} to {}", self.from, self.to)
    }
}

impl std::error::Error for TransitionError {}

impl TrialStatus {
    pub const ALL: [TrialStatus; 7] = [
        TrialStatus::Candidate,
        TrialStatus::Staged,
        TrialStatus::Running,
        TrialStatus::Completed,
        TrialStatus::Failed,
        TrialStatus::Abandoned,
        TrialStatus::EarlyStopped,
    ];

    /// Ax's integer code for the status (`ax.core.trial_status.TrialStatus`).
    pub fn code(self) -> i64 {
        match self {
            TrialStatus::Candidate => 0,
            TrialStatus::Staged => 1,
            TrialStatus::Failed => 2,
            TrialStatus::Completed => 3,
            TrialStatus::Running => 4,
            TrialStatus::Abandoned => 5,
            TrialStatus::EarlyStopped => 7,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Candidate => "CANDIDATE",
            TrialStatus::Staged => "STAGED",
            TrialStatus::Failed => "FAILED",
            TrialStatus::Completed => "COMPLETED",
            TrialStatus::Running => "RUNNING",
            TrialStatus::Abandoned => "ABANDONED",
            TrialStatus::EarlyStopped => "EARLY_STOPPED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TrialStatus::Completed | TrialStatus::Failed | TrialStatus::Abandoned | TrialStatus::EarlyStopped
        )
    }

    /// Whether the lifecycle allows `self -> to`.
    pub fn can_become(self, to: TrialStatus) -> bool {
        use TrialStatus::*;
        match (self, to) {
            (Candidate, Staged) | (Staged, Running) => true,
            (Running, Completed | Failed | EarlyStopped) => true,
            (Candidate | Staged, Failed) => true,
            (from, Abandoned) => !from.is_terminal(),
            _ => false,
        }
    }

    /// The checked transition.
    pub fn transition(self, to: TrialStatus) -> Result<TrialStatus, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrialStatus::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown trial status `{s}`"))
    }
}

/// One trial as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub index: u64,
    pub status: TrialStatus,
    pub lost: bool,
    pub arm_key: String,
    pub parameters: serde_json::Value,
    pub generation: String,
    pub rerun_of: Option<u64>,
    pub attempt: u32,
    pub slot: Option<usize>,
    pub session: i64,
    /// The worker (session) that follows the trial now, if any.
    pub holder: Option<i64>,
    pub feasible: Option<bool>,
    pub reason: Option<String>,
    pub run_metadata: Option<serde_json::Value>,
    pub stop_metadata: Option<serde_json::Value>,
    pub trial_dir: Option<String>,
    pub created_at: String,
    pub staged_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

/// One observed value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub trial: u64,
    pub metric: String,
    pub progression: Option<f64>,
    pub mean: f64,
    pub sem: Option<f64>,
    pub is_final: bool,
}

impl Trial {
    /// Drop what only the store needs to keep (parameters, metadata, reason, times).
    /// A trial handed out by `optx ask` (or added by `optx attach`): the user runs it and
    /// tells its results; no worker follows it.
    pub fn is_asked(&self) -> bool {
        self.run_metadata.as_ref().is_some_and(|m| m.get("asked_by").is_some())
    }

    pub fn shrink(&mut self) {
        self.parameters = serde_json::Value::Null;
        self.run_metadata = None;
        self.stop_metadata = None;
        self.reason = None;
        self.trial_dir = None;
        self.staged_at = None;
        self.started_at = None;
        self.completed_at = None;
        self.created_at = String::new();
        self.generation = String::new();
    }
}

/// The final value of each metric of each trial (the last final observation wins).
pub fn final_values(
    obs: &[Observation],
) -> std::collections::HashMap<u64, std::collections::BTreeMap<String, Observation>> {
    let mut out: std::collections::HashMap<u64, std::collections::BTreeMap<String, Observation>> = Default::default();
    for o in obs.iter().filter(|o| o.is_final) {
        out.entry(o.trial).or_default().insert(o.metric.clone(), o.clone());
    }
    out
}

/// The best feasible completed trials and their objective values: the best one, or for
/// several objectives the Pareto front (`Goal::best`).
pub fn best_trials(
    goal: &super::Goal,
    trials: &[Trial],
    finals: &std::collections::HashMap<u64, std::collections::BTreeMap<String, Observation>>,
) -> Vec<super::Point> {
    goal.best(trials.iter().filter(|t| t.status == TrialStatus::Completed && t.feasible == Some(true)).filter_map(
        |t| {
            let m = finals.get(&t.index)?;
            Some((t.index, goal.values(|k| m.get(k).map(|o| o.mean))?))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::TrialStatus::*;
    use super::*;

    #[test]
    fn the_lifecycle_allows_exactly_the_documented_transitions() {
        let allowed = [
            (Candidate, Staged),
            (Staged, Running),
            (Running, Completed),
            (Running, Failed),
            (Running, EarlyStopped),
            (Candidate, Failed),
            (Staged, Failed),
            (Candidate, Abandoned),
            (Staged, Abandoned),
            (Running, Abandoned),
        ];
        for from in TrialStatus::ALL {
            for to in TrialStatus::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_refused_transition_names_both_states() {
        let err = Completed.transition(Running).unwrap_err();
        assert_eq!(err.to_string(), "a trial cannot go from COMPLETED to RUNNING");
    }

    #[test]
    fn names_parse_back() {
        for s in TrialStatus::ALL {
            assert_eq!(s.as_str().parse::<TrialStatus>().unwrap(), s);
        }
    }
}
