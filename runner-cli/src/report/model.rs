//! For a noisy objective, the best trial as the model sees it (Ax reports the best point by
//! its model's predictions): the completed, feasible trial whose posterior mean is best,
//! with that mean and its standard deviation, beside its observed value. The best observed
//! value of a noisy objective is partly luck; the model's pick averages the luck out.

use super::Snapshot;
use crate::domain::{Arm, TrialStatus};
use crate::generate::bayes::surrogate::surrogate_with_sem;

/// Fewer completed trials than this tell noise from signal too poorly to say.
const MIN_TRIALS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelBest {
    pub index: u64,
    /// The model's mean and standard deviation of the objective there.
    pub mean: f64,
    pub sd: f64,
    /// What the trial reported.
    pub observed: f64,
}

/// The model's pick, when there is one objective and it is noisy.
pub fn model_best(s: &Snapshot) -> Option<ModelBest> {
    let goal = &s.spec.goal;
    if goal.is_multi() {
        return None;
    }
    let o = goal.objectives.first()?;
    let sign = if o.verb() == "maximize" { -1.0 } else { 1.0 };
    let done: Vec<(u64, Arm, f64, Option<f64>)> = s
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed && t.feasible == Some(true))
        .filter_map(|t| {
            let f = s.finals.get(&t.index)?;
            let (v, sem) = o.value_sem(|m| f.get(m).map(|x| (x.mean, x.sem)))?;
            Some((t.index, Arm::from_json(&s.spec.space, &t.parameters)?, v, sem))
        })
        .filter(|d| d.2.is_finite())
        .collect();
    if done.len() < MIN_TRIALS {
        return None;
    }
    let observed: Vec<(Arm, f64, Option<f64>)> = done.iter().map(|d| (d.1.clone(), sign * d.2, d.3)).collect();
    let model = surrogate_with_sem(&s.spec.space, &observed)?;
    if !model.noisy {
        return None;
    }
    done.iter()
        .filter_map(|(i, arm, v, _)| {
            let (m, sd) = model.predict(&s.spec.space, arm)?;
            Some(ModelBest { index: *i, mean: sign * m, sd, observed: *v })
        })
        .min_by(|a, b| (sign * a.mean).total_cmp(&(sign * b.mean)))
}
