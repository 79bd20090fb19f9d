//! What the reports show from a model of the objective: a GP of the completed trials
//! (`generate::bayes::surrogate`), fitted here and handed to `report` as plain data.

use crate::domain::{Arm, TrialStatus};
use crate::generate::bayes::surrogate::{surrogate_with_sem, Surrogate};
use crate::report::html::Contour;
use crate::report::model::ModelBest;
use crate::report::Snapshot;

/// Fewer completed trials than this tell noise from signal too poorly to pick by the model.
const MIN_TRIALS: usize = 8;

/// A completed, feasible trial: its index, arm, objective value and SEM.
type Done = (u64, Arm, f64, Option<f64>);

/// The completed, feasible trials with the first objective, and the sign that orients the
/// value for minimization.
fn completed(s: &Snapshot) -> Option<(Vec<Done>, f64)> {
    let o = s.spec.goal.objectives.first()?;
    let sign = if o.verb() == "maximize" { -1.0 } else { 1.0 };
    let done = s
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
    Some((done, sign))
}

fn fit(s: &Snapshot, done: &[Done], sign: f64) -> Option<Surrogate> {
    let observed: Vec<(Arm, f64, Option<f64>)> = done.iter().map(|d| (d.1.clone(), sign * d.2, d.3)).collect();
    surrogate_with_sem(&s.spec.space, &observed)
}

/// The model's pick, when there is one objective and it is noisy.
pub(super) fn model_best(s: &Snapshot) -> Option<ModelBest> {
    if s.spec.goal.is_multi() {
        return None;
    }
    let (done, sign) = completed(s)?;
    if done.len() < MIN_TRIALS {
        return None;
    }
    let model = fit(s, &done, sign).filter(|m| m.noisy)?;
    done.iter()
        .filter_map(|(i, arm, v, _)| {
            let (m, sd) = model.predict(&s.spec.space, arm)?;
            Some(ModelBest { index: *i, mean: sign * m, sd, observed: *v })
        })
        .min_by(|a, b| (sign * a.mean).total_cmp(&(sign * b.mean)))
}

/// Each searched parameter's importance (largest first), and the model's mean over the two
/// most important ones (the others at the best trial's values), for the HTML report.
pub(super) fn importance_and_contour(s: &Snapshot) -> (Vec<(String, f64)>, Option<Contour>) {
    let Some((done, sign)) = completed(s) else { return (Vec::new(), None) };
    let Some(model) = fit(s, &done, sign) else { return (Vec::new(), None) };
    let space = &s.spec.space;
    let mut importance: Vec<(String, f64)> =
        model.importance.iter().map(|(p, v)| (space.parameters[*p].name.clone(), *v)).collect();
    importance.sort_by(|a, b| b.1.total_cmp(&a.1));
    let best = s.best().first().and_then(|b| Arm::from_json(space, &s.trials[b.0 as usize].parameters));
    let contour = model.top_two().zip(best).and_then(|((a, b), at)| {
        // Oriented back: the report colours by the objective as it is.
        let grid = model.grid(space, &at, a, b, 30)?;
        let grid = grid.into_iter().map(|r| r.into_iter().map(|v| sign * v).collect()).collect();
        Some(Contour { a, b, grid })
    });
    (importance, contour)
}
