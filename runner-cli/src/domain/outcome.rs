//! Objectives and outcome constraints: what "better" and "feasible" mean.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Minimize,
    Maximize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
}

impl Objective {
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
        let min = Objective { metric: "f".into(), direction: Direction::Minimize };
        let max = Objective { metric: "f".into(), direction: Direction::Maximize };
        assert!(min.better(1.0, 2.0) && !min.better(2.0, 1.0));
        assert!(max.better(2.0, 1.0) && !max.better(1.0, 1.0));
    }
}
