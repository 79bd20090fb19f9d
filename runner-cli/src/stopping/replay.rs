//! Replay: the early-stopping rule over a finished experiment's curves, point by point in
//! the order they were stored, as a run would have met them. Pure.
//!
//! It follows what a run does: each new point of the rule's metric asks the rule about
//! every trial still running (one whose end was not stored yet, and that does not end in
//! this very transaction); the points a trial stored after the rule stopped it do not
//! count. So a run that had early stopping is replayed to the same decisions.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Curves, Decision};
use crate::domain::{EarlyStopping, Observation};

/// What the rule would have done.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The trials it stops, by index.
    pub stopped: BTreeMap<u64, Decision>,
    /// Points of the rule's metric in the log, and those after a replayed stop (saved).
    pub points: usize,
    pub saved: usize,
    /// Trials with a curve of the metric.
    pub curves: usize,
}

/// `log`: every observation in stored order with its transaction's time; `ended_at`: when
/// each ended trial's end was stored.
pub fn replay(es: &EarlyStopping, log: &[(Observation, String)], ended_at: &BTreeMap<u64, String>) -> Replay {
    let mut checker = Checker::of(es);
    let mut curves = Curves::default();
    let mut ended: BTreeSet<u64> = BTreeSet::new();
    let mut stopped: BTreeMap<u64, Decision> = BTreeMap::new();
    let (mut points, mut saved) = (0, 0);
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for (o, time) in log {
        if o.is_final {
            ended.insert(o.trial);
            continue;
        }
        let Some(at) = o.progression.filter(|_| o.metric == es.metric && o.mean.is_finite()) else { continue };
        points += 1;
        seen.insert(o.trial);
        if stopped.contains_key(&o.trial) {
            saved += 1;
            continue;
        }
        curves.push(o.trial, at, o.mean);
        let ends_before = |t: &u64| ended.contains(t) || ended_at.get(t).is_some_and(|e| e.as_str() < time.as_str());
        let ends_now = |t: &u64| ended_at.get(t).is_some_and(|e| e == time);
        let candidates: Vec<u64> =
            curves.trials().filter(|t| !stopped.contains_key(t) && !ends_before(t) && !ends_now(t)).collect();
        if candidates.is_empty() {
            continue;
        }
        for d in checker.decide(&curves, &candidates) {
            stopped.insert(d.trial, d);
        }
    }
    Replay { stopped, points, saved, curves: seen.len() }
}
