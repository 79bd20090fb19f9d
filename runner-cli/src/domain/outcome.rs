//! Objectives and outcome constraints: what "better" and "feasible" mean.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Minimize,
    Maximize,
}

/// One thing to optimize: a metric, or a weighted sum of metrics (a scalarized objective).
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// As written: `val_loss`, or `val_loss + 0.01*latency_ms`.
    pub name: String,
    /// `(metric, coefficient)`; a plain metric is one term with coefficient 1.
    pub terms: Vec<(String, f64)>,
    pub direction: Direction,
}

impl Objective {
    /// A plain metric.
    pub fn metric(name: &str, direction: Direction) -> Objective {
        Objective { name: name.to_string(), terms: vec![(name.to_string(), 1.0)], direction }
    }

    /// Whether this is a plain metric (not a weighted sum).
    pub fn is_metric(&self) -> bool {
        matches!(self.terms.as_slice(), [(m, c)] if *c == 1.0 && *m == self.name)
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.direction {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self.direction {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        }
    }

    /// The value and its standard error from each metric's `(mean, SEM)`: `None` when a
    /// metric is missing or not finite; no SEM unless every term has one.
    pub fn value_sem(&self, metric: impl Fn(&str) -> Option<(f64, Option<f64>)>) -> Option<(f64, Option<f64>)> {
        let mut value = 0.0;
        let mut var = Some(0.0);
        for (m, c) in &self.terms {
            let (mean, sem) = metric(m).filter(|v| v.0.is_finite())?;
            value += c * mean;
            var = var.zip(sem.filter(|s| s.is_finite() && *s >= 0.0)).map(|(v, s)| v + (c * s).powi(2));
        }
        Some((value, var.map(f64::sqrt)))
    }

    /// The value from each metric's mean (`None` when one is missing or not finite).
    pub fn value(&self, metric: impl Fn(&str) -> Option<f64>) -> Option<f64> {
        self.value_sem(|m| metric(m).map(|v| (v, None))).map(|v| v.0)
    }
}

/// What the experiment optimizes: one objective, or several with a Pareto front as the
/// result, and for several the thresholds (reference point) a point of the front must meet.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub objectives: Vec<Objective>,
    /// Each names a plain-metric objective, in its direction (`<=` when minimized).
    pub thresholds: Vec<OutcomeConstraint>,
}

/// A trial and the value of each objective.
pub type Point = (u64, Vec<f64>);

impl Goal {
    pub fn single(objective: Objective) -> Goal {
        Goal { objectives: vec![objective], thresholds: Vec::new() }
    }

    pub fn is_multi(&self) -> bool {
        self.objectives.len() > 1
    }

    /// Every metric the objectives are made of, once, in order.
    pub fn metrics(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (m, _) in self.objectives.iter().flat_map(|o| &o.terms) {
            if !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }

    /// `minimize val_loss`, `minimize val_loss, latency_ms; maximize accuracy`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for d in [Direction::Minimize, Direction::Maximize] {
            let names: Vec<&str> =
                self.objectives.iter().filter(|o| o.direction == d).map(|o| o.name.as_str()).collect();
            if let Some(o) = self.objectives.iter().find(|o| o.direction == d) {
                parts.push(format!("{} {}", o.verb(), names.join(", ")));
            }
        }
        parts.join("; ")
    }

    /// Each objective's value, or `None` if one cannot be computed.
    pub fn values(&self, metric: impl Fn(&str) -> Option<f64>) -> Option<Vec<f64>> {
        self.objectives.iter().map(|o| o.value(&metric)).collect()
    }

    /// Whether `a` is at least as good as `b` in every objective and better in one.
    pub fn dominates(&self, a: &[f64], b: &[f64]) -> bool {
        let mut strictly = false;
        for ((o, x), y) in self.objectives.iter().zip(a).zip(b) {
            if o.better(*y, *x) {
                return false;
            }
            strictly |= o.better(*x, *y);
        }
        strictly
    }

    /// Whether objective values meet every threshold.
    pub fn within_thresholds(&self, values: &[f64]) -> bool {
        self.thresholds
            .iter()
            .all(|t| self.objectives.iter().position(|o| o.name == t.metric).is_none_or(|i| t.satisfied(values[i])))
    }

    /// Offer a feasible point to the current best: for one objective the best point (the
    /// earlier one on a tie), for several the Pareto front within the thresholds. Returns
    /// whether the point joined it.
    pub fn admit(&self, best: &mut Vec<Point>, index: u64, values: Vec<f64>) -> bool {
        if values.len() != self.objectives.len() || values.iter().any(|v| !v.is_finite()) {
            return false;
        }
        if !self.is_multi() {
            if best.first().is_some_and(|(_, b)| !self.objectives[0].better(values[0], b[0])) {
                return false;
            }
            *best = vec![(index, values)];
            return true;
        }
        if !self.within_thresholds(&values) || best.iter().any(|(_, b)| self.dominates(b, &values)) {
            return false;
        }
        best.retain(|(_, b)| !self.dominates(&values, b));
        best.push((index, values));
        true
    }

    /// The best of feasible points given in index order: one point, or the Pareto front
    /// in index order.
    pub fn best(&self, points: impl IntoIterator<Item = Point>) -> Vec<Point> {
        let mut best = Vec::new();
        for (i, v) in points {
            self.admit(&mut best, i, v);
        }
        best.sort_by_key(|p| p.0);
        best
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    AtMost,
    AtLeast,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeConstraint {
    pub metric: String,
    pub relation: Relation,
    pub bound: f64,
}

impl OutcomeConstraint {
    pub fn satisfied(&self, value: f64) -> bool {
        match self.relation {
            Relation::AtMost => value <= self.bound,
            Relation::AtLeast => value >= self.bound,
        }
    }

    /// Feasible when every constraint holds for the trial's final values. A constraint
    /// whose metric is absent makes the trial infeasible.
    pub fn all_satisfied(constraints: &[OutcomeConstraint], values: &BTreeMap<String, f64>) -> bool {
        constraints.iter().all(|c| values.get(&c.metric).is_some_and(|v| c.satisfied(*v)))
    }
}

impl std::fmt::Display for OutcomeConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.relation {
            Relation::AtMost => "<=",
            Relation::AtLeast => ">=",
        };
        write!(f, "{} {} {}", self.metric, op, self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasibility_needs_every_constraint_and_every_metric() {
        let cs = vec![
            OutcomeConstraint { metric: "lat".into(), relation: Relation::AtMost, bound: 200.0 },
            OutcomeConstraint { metric: "acc".into(), relation: Relation::AtLeast, bound: 0.5 },
        ];
        let mut v = BTreeMap::from([("lat".to_string(), 150.0), ("acc".to_string(), 0.7)]);
        assert!(OutcomeConstraint::all_satisfied(&cs, &v));
        v.insert("lat".into(), 250.0);
        assert!(!OutcomeConstraint::all_satisfied(&cs, &v));
        v.remove("lat");
        assert!(!OutcomeConstraint::all_satisfied(&cs, &v));
    }

    #[test]
    fn better_follows_the_direction() {
        let min = Objective::metric("f", Direction::Minimize);
        let max = Objective::metric("f", Direction::Maximize);
        assert!(min.better(1.0, 2.0) && !min.better(2.0, 1.0));
        assert!(max.better(2.0, 1.0) && !max.better(1.0, 1.0));
    }

    #[test]
    fn a_scalarized_value_sums_its_terms_and_their_errors() {
        let o = Objective {
            name: "a + 2*b".into(),
            terms: vec![("a".into(), 1.0), ("b".into(), 2.0)],
            direction: Direction::Minimize,
        };
        assert!(!o.is_metric() && Objective::metric("a", Direction::Minimize).is_metric());
        let v = |a: Option<f64>, b: Option<f64>| {
            move |m: &str| {
                if m == "a" {
                    Some((1.0, a))
                } else if m == "b" {
                    Some((3.0, b))
                } else {
                    None
                }
            }
        };
        assert_eq!(o.value_sem(v(Some(3.0), Some(2.0))), Some((7.0, Some(5.0))));
        assert_eq!(o.value_sem(v(Some(3.0), None)), Some((7.0, None)));
        assert_eq!(o.value(|m| (m == "a").then_some(1.0)), None);
        assert_eq!(o.value(|_| Some(f64::NAN)), None);
    }

    fn two() -> Goal {
        Goal {
            objectives: vec![
                Objective::metric("loss", Direction::Minimize),
                Objective::metric("acc", Direction::Maximize),
            ],
            thresholds: vec![OutcomeConstraint { metric: "acc".into(), relation: Relation::AtLeast, bound: 0.5 }],
        }
    }

    #[test]
    fn the_front_keeps_exactly_the_undominated_points_within_thresholds() {
        let g = two();
        assert!(g.dominates(&[1.0, 0.9], &[2.0, 0.9]) && !g.dominates(&[1.0, 0.9], &[1.0, 0.9]));
        assert!(!g.dominates(&[1.0, 0.8], &[2.0, 0.9]));
        let pts = vec![
            (0, vec![2.0, 0.9]),
            (1, vec![1.0, 0.7]),
            (2, vec![3.0, 0.8]), // dominated by 0
            (3, vec![0.5, 0.4]), // below the accuracy threshold
            (4, vec![1.5, 0.95]),
            (5, vec![1.0, 0.7]), // equal to 1: both stay
            (6, vec![f64::NAN, 1.0]),
        ];
        let front: Vec<u64> = g.best(pts).into_iter().map(|p| p.0).collect();
        assert_eq!(front, vec![1, 4, 5]);
        assert_eq!(g.describe(), "minimize loss; maximize acc");
    }

    #[test]
    fn one_objective_keeps_the_first_best() {
        let g = Goal::single(Objective::metric("f", Direction::Minimize));
        let best = g.best(vec![(0, vec![2.0]), (1, vec![1.0]), (2, vec![1.0]), (3, vec![3.0])]);
        assert_eq!(best, vec![(1, vec![1.0])]);
        assert_eq!(g.metrics(), vec!["f"]);
    }
}
