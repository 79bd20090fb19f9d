//! Global stopping: whether a run has stopped improving, from the objective values of its
//! completed, feasible trials in the order they completed. Pure.

use crate::domain::GlobalStopping;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len().saturating_sub(1)) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn num(x: f64) -> String {
    format!("{}", (x * 1e6).round() / 1e6)
}

/// Why the run should stop, if it should. `values`: the objective of each completed,
/// feasible trial, in completion order; `minimize`: its direction.
pub fn should_stop(rule: &GlobalStopping, minimize: bool, values: &[f64]) -> Option<String> {
    let better = |a: f64, b: f64| if minimize { a < b } else { a > b };
    let best_of = |v: &[f64]| v.iter().copied().reduce(|a, b| if better(b, a) { b } else { a });
    match *rule {
        GlobalStopping::Target { min_trials, value } => {
            let best = best_of(values)?;
            (values.len() >= min_trials && !better(value, best)).then(|| {
                format!("global stopping: the objective reached the target {} (best {})", num(value), num(best))
            })
        }
        GlobalStopping::NoImprovement { min_trials, patience } => {
            if values.len() < min_trials.max(1) {
                return None;
            }
            // Trials since the last new best.
            let mut best = values[0];
            let mut since = 0;
            for v in &values[1..] {
                if better(*v, best) {
                    best = *v;
                    since = 0;
                } else {
                    since += 1;
                }
            }
            (since >= patience).then(|| {
                format!("global stopping: {since} completed trials in a row without a new best (patience {patience}; best {})", num(best))
            })
        }
        GlobalStopping::Improvement { min_trials, window_size, improvement_bar } => {
            if values.len() < min_trials.max(window_size + 1) {
                return None;
            }
            let before = best_of(&values[..values.len() - window_size])?;
            let now = best_of(values)?;
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            let iqr = quantile(&sorted, 0.75) - quantile(&sorted, 0.25);
            let improvement = (now - before).abs();
            // No spread at all: nothing left to improve on that scale.
            let relative = if iqr > 0.0 { improvement / iqr } else { 0.0 };
            (relative < improvement_bar).then(|| {
                format!(
                    "global stopping: the best objective improved by {} over the last {window_size} trials, less than {} times the interquartile range of the objectives so far ({})",
                    num(improvement),
                    num(improvement_bar),
                    num(iqr)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improvement_stops_a_converged_run_only() {
        let rule = GlobalStopping::Improvement { min_trials: 5, window_size: 3, improvement_bar: 0.1 };
        // Still improving by a lot in the last three.
        assert!(should_stop(&rule, true, &[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]).is_none());
        // Flat for the last three: improvement 0.
        let why = should_stop(&rule, true, &[5.0, 4.0, 1.0, 2.0, 3.0, 1.5]).unwrap();
        assert!(why.contains("improved by 0 over the last 3 trials"), "{why}");
        // Too few trials.
        assert!(should_stop(&rule, true, &[5.0, 5.0, 5.0]).is_none());
        // Maximized: the same values read the other way.
        assert!(should_stop(&rule, false, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).is_none());
    }

    #[test]
    fn no_improvement_counts_trials_since_the_last_best() {
        let rule = GlobalStopping::NoImprovement { min_trials: 1, patience: 3 };
        assert!(should_stop(&rule, true, &[3.0, 2.0, 2.5, 2.1]).is_none());
        assert!(should_stop(&rule, true, &[3.0, 2.0, 2.5, 2.1, 2.0]).unwrap().contains("3 completed trials in a row"));
    }

    #[test]
    fn target_stops_once_reached() {
        let rule = GlobalStopping::Target { min_trials: 2, value: 0.5 };
        assert!(should_stop(&rule, true, &[0.4]).is_none(), "min_trials");
        assert!(should_stop(&rule, true, &[0.9, 0.6]).is_none());
        assert!(should_stop(&rule, true, &[0.9, 0.5]).is_some());
        assert!(should_stop(&rule, false, &[0.1, 0.6]).is_some());
    }
}
