//! Why a run stops deploying: the stop rules, pure (counts in, a decision out), and one
//! ranked order of their reasons, as nextest ranks its cancel reasons. Once a run stops,
//! only a more severe reason replaces the one it stopped for: a budget spent gives way to
//! lost trials, those to an interrupt, and an interrupt to a failure rate exceeded (which
//! says the most about what to fix). The early-stopping issue extends this module.

use super::RunEnd;
use crate::domain::Orchestration;

/// The kinds of reasons, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum StopKind {
    /// `[global_stopping]`: the run stopped improving; done (`resume
    /// --ignore-global-stopping` goes on).
    Global,
    /// A budget was reached (`timeout_hours`, `max_cost`): done, resumable.
    Budget,
    /// Trial after trial was lost.
    TooManyLost,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The failure rate exceeded `tolerated_trial_failure_rate`.
    FailureRate,
}

impl StopKind {
    pub(super) fn end(self) -> RunEnd {
        match self {
            StopKind::Global | StopKind::Budget => RunEnd::Done,
            StopKind::TooManyLost => RunEnd::TooManyLost,
            StopKind::Interrupted => RunEnd::Interrupted,
            StopKind::FailureRate => RunEnd::FailureRate,
        }
    }
}

/// A reason to stop, with what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stop {
    pub kind: StopKind,
    pub why: String,
}

/// Whether `next` replaces the reason the run stopped for (if any): only a more severe one.
pub(super) fn supersedes(current: Option<&Stop>, next: &Stop) -> bool {
    current.is_none_or(|c| next.kind > c.kind)
}

/// `[global_stopping]`, given the objective of each completed, feasible trial in order.
pub(super) fn global(spec: &crate::domain::ExperimentSpec, values: &[f64]) -> Option<Stop> {
    let rule = spec.global_stopping.as_ref().filter(|_| !spec.orchestration.ignore_global_stopping)?;
    let minimize = spec.goal.objectives.first().is_none_or(|o| o.direction == crate::domain::Direction::Minimize);
    let why = crate::stopping::global::should_stop(rule, minimize, values)?;
    Some(Stop {
        kind: StopKind::Global,
        why: format!("{why}: deploying nothing more (`optx resume --ignore-global-stopping` goes on)"),
    })
}

/// The failure rate of this session: `failed` of `deployed` (neither counting lost trials).
pub(super) fn failure_rate(o: &Orchestration, failed: u64, deployed: u64) -> Option<Stop> {
    let deployed = deployed.max(1);
    let rate = failed as f64 / deployed as f64;
    (failed >= o.min_failed_trials_for_failure_rate_check && rate > o.tolerated_trial_failure_rate).then(|| Stop {
        kind: StopKind::FailureRate,
        why: format!(
            "{failed} of {deployed} trials deployed in this session failed ({:.0}%, tolerated_trial_failure_rate is {:.0}%): stopping; fix the cause and `optx resume`",
            rate * 100.0,
            o.tolerated_trial_failure_rate * 100.0
        ),
    })
}

/// The reasons of failed trials grouped by their first line, most frequent first: each
/// group's count, trials and the rest of its first reason (the end of stderr, say). At most
/// `max` groups, and a line for the rest.
pub(super) fn failure_groups(failures: &[(u64, String)], max: usize) -> String {
    let mut groups: Vec<(String, Vec<u64>, String)> = Vec::new();
    for (index, reason) in failures {
        let (first, rest) = reason.split_once('\n').unwrap_or((reason.as_str(), ""));
        // Reasons that differ only in their numbers (exit codes aside) are one group.
        let key: String = first.chars().filter(|c| !c.is_ascii_digit()).collect();
        match groups.iter_mut().find(|g| g.0.chars().filter(|c| !c.is_ascii_digit()).collect::<String>() == key) {
            Some(g) => g.1.push(*index),
            None => groups.push((first.to_string(), vec![*index], rest.to_string())),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    // Each group's trials in index order, however they happened to end.
    for g in &mut groups {
        g.1.sort_unstable();
    }
    let mut out = String::new();
    for (first, trials, rest) in groups.iter().take(max) {
        let list: Vec<String> = trials.iter().take(8).map(|t| t.to_string()).collect();
        let more = if trials.len() > 8 { ", ..." } else { "" };
        out.push_str(&format!("\n  {} x (trial {}{more}): {first}", trials.len(), list.join(", ")));
        for line in rest.lines().filter(|l| !l.trim().is_empty()).take(5) {
            out.push_str(&format!("\n      | {line}"));
        }
    }
    if groups.len() > max {
        let n: usize = groups[max..].iter().map(|g| g.1.len()).sum();
        out.push_str(&format!("\n  and {n} more in {} other group(s): `optx trials` lists them", groups.len() - max));
    }
    out
}

/// Trials lost one after the other: they are not counted, so nothing else would end a run
/// whose every trial is lost. The bound is max(5, 2 × parallelism).
pub(super) fn lost_streak(o: &Orchestration, streak: u64, last_reason: &str) -> Option<Stop> {
    let bound = (2 * o.parallelism as u64).max(5);
    let first = last_reason.lines().next().unwrap_or(last_reason);
    (streak >= bound).then(|| Stop {
        kind: StopKind::TooManyLost,
        why: format!(
            "{streak} trials in a row were lost (the last: {first}): stopping instead of running their arms again and again; fix the cause and `optx resume`"
        ),
    })
}

/// The cost budget (`max_cost`), spent once the sum of the `cost` metric reaches it.
pub(super) fn cost(o: &Orchestration, spent: f64) -> Option<Stop> {
    let max = o.max_cost?;
    (spent >= max)
        .then(|| Stop { kind: StopKind::Budget, why: format!("the cost budget is spent ({spent} >= max_cost {max})") })
}

/// `timeout_hours` passed.
pub(super) fn deadline() -> Stop {
    Stop { kind: StopKind::Budget, why: "timeout_hours reached: `optx resume` continues the experiment".into() }
}

/// An interrupt (the first or the second).
pub(super) fn interrupted() -> Stop {
    Stop { kind: StopKind::Interrupted, why: "interrupted".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orch(text: &str) -> Orchestration {
        let mut o = Orchestration { max_trials: 10, ..Default::default() };
        for kv in text.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            match k.trim() {
                "min_failed" => o.min_failed_trials_for_failure_rate_check = v.trim().parse().unwrap(),
                "tolerated" => o.tolerated_trial_failure_rate = v.trim().parse().unwrap(),
                "parallelism" => o.parallelism = v.trim().parse().unwrap(),
                "max_cost" => o.max_cost = Some(v.trim().parse().unwrap()),
                other => panic!("{other}"),
            }
        }
        o
    }

    #[test]
    fn the_failure_rate_needs_enough_failures_and_a_rate_past_the_tolerated_one() {
        let o = orch("min_failed=5, tolerated=0.5");
        assert_eq!(failure_rate(&o, 4, 4), None, "too few failures to judge");
        assert_eq!(failure_rate(&o, 5, 10), None, "50% is tolerated");
        let s = failure_rate(&o, 6, 10).unwrap();
        assert_eq!(s.kind, StopKind::FailureRate);
        assert!(s.why.starts_with("6 of 10 trials deployed in this session failed (60%"), "{}", s.why);
        assert!(failure_rate(&o, 5, 0).is_some(), "nothing deployed counts as one");
    }

    #[test]
    fn lost_trials_in_a_row_are_bounded_by_the_parallelism() {
        assert_eq!(lost_streak(&orch("parallelism=1"), 4, "x"), None);
        assert!(lost_streak(&orch("parallelism=1"), 5, "x").is_some(), "at least 5");
        assert_eq!(lost_streak(&orch("parallelism=4"), 7, "x"), None);
        let s = lost_streak(&orch("parallelism=4"), 8, "the shepherd died\nmore").unwrap();
        assert!(s.why.contains("(the last: the shepherd died)"), "{}", s.why);
    }

    #[test]
    fn the_cost_budget_is_spent_when_reached() {
        assert_eq!(cost(&orch(""), 1e9), None, "no budget");
        assert_eq!(cost(&orch("max_cost=3"), 2.5), None);
        assert_eq!(cost(&orch("max_cost=3"), 3.0).map(|s| s.kind), Some(StopKind::Budget));
    }

    #[test]
    fn only_a_more_severe_reason_replaces_the_one_the_run_stopped_for() {
        let order = [deadline(), lost_streak(&orch(""), 9, "x").unwrap(), interrupted()];
        assert!(supersedes(None, &order[0]));
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(supersedes(Some(a), b), j > i, "{:?} then {:?}", a.kind, b.kind);
            }
        }
        let failed = failure_rate(&orch("min_failed=1"), 2, 2).unwrap();
        assert!(supersedes(Some(&interrupted()), &failed), "a failure rate says the most");
        assert_eq!(failed.kind.end(), RunEnd::FailureRate);
        let g = failure_groups(
            &[
                (1, "exit 1; stderr ends with:\nModuleNotFoundError: no torch".into()),
                (2, "metric `f` was not reported".into()),
                (3, "exit 1; stderr ends with:\nModuleNotFoundError: no torch".into()),
                (4, "exit 2; stderr ends with:\nother".into()),
            ],
            5,
        );
        assert_eq!(
            g,
            "\n  3 x (trial 1, 3, 4): exit 1; stderr ends with:\n      | ModuleNotFoundError: no torch\n  1 x (trial 2): metric `f` was not reported"
        );
        assert_eq!(deadline().kind.end(), RunEnd::Done);
    }
}
