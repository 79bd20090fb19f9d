//! `[early_stopping]`: a rule on one metric's learning curves.

use std::collections::BTreeMap;

use super::walk::{Ctx, Table};
use crate::domain::{
    Direction, EarlyStopping, GlobalStopping, Goal, MetricRule, OutcomeConstraint, Relation, StopOptions, StopRule,
};

pub(super) const KEYS: [&str; 13] = [
    "strategy",
    "metric",
    "percentile_threshold",
    "metric_threshold",
    "min_progression",
    "max_progression",
    "min_curves",
    "patience",
    "protect_best",
    "interval",
    "min_resource",
    "max_resource",
    "reduction_factor",
];

pub(super) fn read_early_stopping(
    ctx: &mut Ctx,
    t: &Table,
    goal: &Goal,
    constraints: &[OutcomeConstraint],
    metrics: &BTreeMap<String, MetricRule>,
) -> Option<EarlyStopping> {
    t.check_keys(ctx, &KEYS, &[]);
    let strategy = t.one_of(ctx, "strategy", &["percentile", "threshold", "asha"]).unwrap_or("percentile");
    // The metric, and which way is better: an objective's direction, or a constraint's.
    let plain: Vec<&crate::domain::Objective> = goal.objectives.iter().filter(|o| o.is_metric()).collect();
    let metric = match t.str(ctx, "metric") {
        Some(m) => m.to_string(),
        None if goal.objectives.len() == 1 && plain.len() == 1 => plain[0].name.clone(),
        None => {
            ctx.err(
                t.span.clone(),
                "`early_stopping.metric` is needed: the objective is not one plain metric (name the metric whose learning curve is compared)",
            );
            return None;
        }
    };
    let direction = plain.iter().find(|o| o.name == metric).map(|o| o.direction).or_else(|| {
        constraints.iter().find(|c| c.metric == metric).map(|c| match c.relation {
            Relation::AtMost => Direction::Minimize,
            Relation::AtLeast => Direction::Maximize,
        })
    });
    let Some(direction) = direction else {
        let known = metrics.keys().cloned().collect::<Vec<_>>().join(", ");
        ctx.err(
            t.key_span("metric"),
            format!(
                "`early_stopping.metric = \"{metric}\"` must be an objective or a constrained metric, whose direction says which curves are worse (the experiment's metrics: {known})"
            ),
        );
        return None;
    };
    let positive =
        |ctx: &mut Ctx, key: &str| t.get(key).and_then(|_| t.f64_where(ctx, key, "a positive number", |x| x > 0.0));
    let at_least_zero =
        |ctx: &mut Ctx, key: &str| t.get(key).and_then(|_| t.f64_where(ctx, key, "a number >= 0", |x| x >= 0.0));
    let count = |ctx: &mut Ctx, key: &str, default: usize| {
        t.get(key).and_then(|_| t.i64_where(ctx, key, "an integer >= 0", |x| x >= 0)).map_or(default, |x| x as usize)
    };
    let rule = match strategy {
        "threshold" => {
            t.require(ctx, "metric_threshold")?;
            StopRule::Threshold { value: t.f64_where(ctx, "metric_threshold", "a number", f64::is_finite)? }
        }
        "asha" => {
            let min_resource = positive(ctx, "min_resource").unwrap_or(1.0);
            let reduction_factor = t
                .get("reduction_factor")
                .and_then(|_| t.f64_where(ctx, "reduction_factor", "a number > 1", |x| x > 1.0))
                .unwrap_or(3.0);
            let max_resource = positive(ctx, "max_resource").unwrap_or(f64::INFINITY);
            if max_resource < min_resource {
                ctx.err(t.key_span("max_resource"), "`early_stopping.max_resource` is below `min_resource`");
                return None;
            }
            StopRule::Asha { min_resource, max_resource, reduction_factor }
        }
        _ => {
            let threshold = t
                .get("percentile_threshold")
                .and_then(|_| {
                    t.f64_where(ctx, "percentile_threshold", "a percentile in [0, 100]", |x| (0.0..=100.0).contains(&x))
                })
                .unwrap_or(50.0);
            StopRule::Percentile { threshold }
        }
    };
    let options = StopOptions {
        minimize: direction == Direction::Minimize,
        min_progression: at_least_zero(ctx, "min_progression"),
        max_progression: at_least_zero(ctx, "max_progression"),
        min_curves: count(ctx, "min_curves", 5),
        patience: at_least_zero(ctx, "patience").unwrap_or(0.0),
        protect_best: count(ctx, "protect_best", 0),
        interval: at_least_zero(ctx, "interval").filter(|i| *i > 0.0),
    };
    if let (Some(lo), Some(hi)) = (options.min_progression, options.max_progression) {
        if hi < lo {
            ctx.err(t.key_span("max_progression"), "`early_stopping.max_progression` is below `min_progression`");
            return None;
        }
    }
    Some(EarlyStopping { metric, rule, options })
}

/// `[global_stopping]`: improvement (Ax's defaults: 5 trials, a window of 5, a bar of 0.1),
/// no_improvement (`patience`), or target (`value`). One objective only.
pub(super) fn read_global_stopping(ctx: &mut Ctx, t: &Table, goal: &Goal) -> Option<GlobalStopping> {
    t.check_keys(ctx, &["strategy", "min_trials", "window_size", "improvement_bar", "patience", "value"], &[]);
    if goal.objectives.len() != 1 {
        ctx.err(
            t.span.clone(),
            "`[global_stopping]` needs a single objective (a Pareto front has no one best value to watch)",
        );
        return None;
    }
    let strategy = t.one_of(ctx, "strategy", &["improvement", "no_improvement", "target"]).unwrap_or("improvement");
    let count = |ctx: &mut Ctx, key: &str, default: i64| {
        t.get(key).and_then(|_| t.i64_where(ctx, key, "a positive integer", |x| x >= 1)).unwrap_or(default) as usize
    };
    let min_trials = count(ctx, "min_trials", 5);
    Some(match strategy {
        "target" => {
            t.require(ctx, "value")?;
            GlobalStopping::Target { min_trials, value: t.f64_where(ctx, "value", "a number", f64::is_finite)? }
        }
        "no_improvement" => GlobalStopping::NoImprovement { min_trials, patience: count(ctx, "patience", 10) },
        _ => GlobalStopping::Improvement {
            min_trials,
            window_size: count(ctx, "window_size", 5),
            improvement_bar: t
                .get("improvement_bar")
                .and_then(|_| t.f64_where(ctx, "improvement_bar", "a number >= 0", |x| x >= 0.0))
                .unwrap_or(0.1),
        },
    })
}
