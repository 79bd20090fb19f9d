//! L1: early stopping on learning curves, pure: curves in, decisions out, no I/O.
//!
//! Semantics follow Ax's early-stopping strategies (`percentile`, `threshold`) and
//! asynchronous successive halving (`asha`), as CONFIG.md "Early stopping" describes:
//! - curves are compared at a common progression by linear interpolation inside each
//!   curve's observed range (a curve has no value outside it);
//! - nothing is decided before `min_curves` curves reach `min_progression`, and a trial is
//!   compared at a progression only where at least `min_curves` curves have a value;
//! - a trial is eligible while its latest progression lies in [`min_progression`,
//!   `max_progression`]; with `interval`, it is checked when it first becomes eligible and
//!   then each time it crosses `min_progression + k * interval`;
//! - with `patience`, a trial must be worse at every progression of its window
//!   `[p - patience, p]` (its own points there), not at one;
//! - `protect_best = N` never stops a trial ranked in the top N (dense rank) at any
//!   progression of its window.
//!
//! The [`Checker`] keeps what must be remembered between points (the last interval or rung
//! a trial was checked at), so that each new point of a running trial is one call.

pub mod global;
pub mod replay;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

/// A trial's learning curve: (progression, value) sorted by progression.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub trial: u64,
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    pub fn new(trial: u64, mut points: Vec<(f64, f64)>) -> Curve {
        points.retain(|(p, v)| p.is_finite() && v.is_finite());
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // One value per progression: the last reported.
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
        for (p, v) in points {
            match out.last_mut() {
                Some(last) if last.0 == p => last.1 = v,
                _ => out.push((p, v)),
            }
        }
        Curve { trial, points: out }
    }

    /// Add a point, kept in order (most often at the end): the last value reported at a
    /// progression replaces an earlier one.
    pub fn push(&mut self, p: f64, v: f64) {
        if !(p.is_finite() && v.is_finite()) {
            return;
        }
        let k = match self.points.last() {
            Some(last) if last.0 < p => self.points.len(),
            None => 0,
            _ => self.points.partition_point(|q| q.0 < p),
        };
        match self.points.get_mut(k) {
            Some(q) if q.0 == p => q.1 = v,
            _ => self.points.insert(k, (p, v)),
        }
    }

    /// The latest progression.
    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.0)
    }

    /// The value at `p` by linear interpolation, inside the observed range only.
    pub fn at(&self, p: f64) -> Option<f64> {
        let pts = &self.points;
        let (first, last) = (pts.first()?, pts.last()?);
        if p < first.0 || p > last.0 {
            return None;
        }
        let k = pts.partition_point(|q| q.0 < p);
        let hi = pts[k];
        if hi.0 == p || k == 0 {
            return Some(hi.1);
        }
        let lo = pts[k - 1];
        Some(lo.1 + (hi.1 - lo.1) * (p - lo.0) / (hi.0 - lo.0))
    }
}

/// Every trial's curve of the rule's metric, by trial, each kept sorted as points arrive
/// (a new point costs a push, not a rebuild of every curve).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    by_trial: BTreeMap<u64, Curve>,
}

impl Curves {
    pub fn push(&mut self, trial: u64, p: f64, v: f64) {
        self.by_trial.entry(trial).or_insert_with(|| Curve { trial, points: Vec::new() }).push(p, v);
    }

    pub fn get(&self, trial: u64) -> Option<&Curve> {
        self.by_trial.get(&trial)
    }

    pub fn contains(&self, trial: u64) -> bool {
        self.by_trial.contains_key(&trial)
    }

    pub fn is_empty(&self) -> bool {
        self.by_trial.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_trial.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Curve> {
        self.by_trial.values()
    }

    pub fn trials(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_trial.keys().copied()
    }
}

impl FromIterator<Curve> for Curves {
    fn from_iter<I: IntoIterator<Item = Curve>>(iter: I) -> Curves {
        Curves { by_trial: iter.into_iter().map(|c| (c.trial, c)).collect() }
    }
}

impl From<&[Curve]> for Curves {
    fn from(curves: &[Curve]) -> Curves {
        curves.iter().cloned().collect()
    }
}

/// Where the rule stopped each early-stopped trial: the progression its `stop_metadata`
/// keeps (`early_stopping.progression`).
pub fn stopped_at(trials: &[crate::domain::Trial]) -> std::collections::HashMap<u64, f64> {
    trials
        .iter()
        .filter(|t| t.status == crate::domain::TrialStatus::EarlyStopped)
        .filter_map(|t| {
            let p = t.stop_metadata.as_ref()?.get("early_stopping")?.get("progression")?.as_f64()?;
            Some((t.index, p))
        })
        .collect()
}

/// The curves of `metric` in stored `observations`, without the points an early-stopped
/// trial reported after the rule's decision (they did not count in the run either).
pub fn stored_curves(
    metric: &str,
    observations: &[crate::domain::Observation],
    stopped_at: &std::collections::HashMap<u64, f64>,
) -> Curves {
    let mut curves = Curves::default();
    for o in observations.iter().filter(|o| !o.is_final && o.metric == metric) {
        if let Some(at) = o.progression.filter(|at| stopped_at.get(&o.trial).is_none_or(|p| at <= p)) {
            curves.push(o.trial, at, o.mean);
        }
    }
    curves
}

pub use crate::domain::{StopOptions as Options, StopRule as Rule};

/// A trial to stop: at which progression, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub trial: u64,
    pub progression: f64,
    pub reason: String,
}

/// The rule and what it remembers between points.
#[derive(Debug, Clone)]
pub struct Checker {
    pub rule: Rule,
    pub options: Options,
    /// The last interval step (or rung) each trial was checked at.
    checked: BTreeMap<u64, i64>,
}

/// `np.percentile` with linear interpolation, of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0];
    }
    let rank = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn fmt(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

impl Checker {
    pub fn new(rule: Rule, options: Options) -> Checker {
        Checker { rule, options, checked: BTreeMap::new() }
    }

    pub fn of(spec: &crate::domain::EarlyStopping) -> Checker {
        Checker::new(spec.rule, spec.options)
    }

    fn worse(&self, a: f64, b: f64) -> bool {
        if self.options.minimize {
            a > b
        } else {
            a < b
        }
    }

    /// Ask the rule about the running trials `candidates`, given every curve (running trials
    /// and ended ones). A trial is checked only when its latest point makes it due (a new
    /// interval step or rung); call this at each new point.
    pub fn decide(&mut self, curves: &Curves, candidates: &[u64]) -> Vec<Decision> {
        let o = self.options;
        let mut out = Vec::new();
        for &t in candidates {
            let Some(curve) = curves.get(t) else { continue };
            let Some(p) = curve.last() else { continue };
            if o.min_progression.is_some_and(|m| p < m) || o.max_progression.is_some_and(|m| p > m) {
                continue;
            }
            // Due: a new interval step (or rung) since the last check.
            let step = match self.rule {
                Rule::Asha { min_resource, max_resource, reduction_factor } => {
                    match rung_of(p, min_resource, max_resource, reduction_factor) {
                        Some(k) => k,
                        None => continue,
                    }
                }
                _ => match o.interval.filter(|i| *i > 0.0) {
                    Some(i) => ((p - o.min_progression.unwrap_or(0.0)) / i).floor() as i64,
                    // Each point is a check.
                    None => self.checked.get(&t).map_or(0, |k| k + 1),
                },
            };
            if self.checked.get(&t).is_some_and(|k| *k >= step) {
                continue;
            }
            self.checked.insert(t, step);
            if let Some(d) = self.check(curves, curve, p, step) {
                out.push(d);
            }
        }
        out
    }

    /// The progressions of a trial's window: its own points in `[p - patience, p]`.
    fn window(&self, curve: &Curve, p: f64) -> Vec<f64> {
        let from = p - self.options.patience.max(0.0);
        curve.points.iter().map(|q| q.0).filter(|q| *q >= from && *q <= p).collect()
    }

    /// The values of every curve at `q` (those that have one), this trial's first.
    fn values_at(curves: &Curves, curve: &Curve, q: f64) -> Option<(f64, Vec<f64>)> {
        let mine = curve.at(q)?;
        Some((mine, curves.iter().filter_map(|c| c.at(q)).collect()))
    }

    /// Whether `mine` ranks in the top `n` (dense rank) of `all`.
    fn protected(&self, mine: f64, all: &[f64]) -> bool {
        let n = self.options.protect_best;
        if n == 0 {
            return false;
        }
        let mut distinct: Vec<f64> = all.to_vec();
        distinct.sort_by(|a, b| if self.options.minimize { a.total_cmp(b) } else { b.total_cmp(a) });
        distinct.dedup();
        let better = distinct.iter().filter(|v| self.worse(mine, **v)).count();
        better < n
    }

    fn check(&self, curves: &Curves, curve: &Curve, p: f64, step: i64) -> Option<Decision> {
        let o = self.options;
        let min_prog = o.min_progression.unwrap_or(f64::NEG_INFINITY);
        let stop = |reason: String| Some(Decision { trial: curve.trial, progression: p, reason });
        match self.rule {
            Rule::Asha { min_resource, reduction_factor, .. } => {
                let rung = min_resource * reduction_factor.powi(step as i32);
                let (mine, all) = Self::values_at(curves, curve, rung)?;
                if self.protected(mine, &all) {
                    return None;
                }
                let mut sorted = all.clone();
                sorted.sort_by(|a, b| if o.minimize { a.total_cmp(b) } else { b.total_cmp(a) });
                // The top 1/reduction_factor go on; the first to reach a rung always does.
                let keep = ((sorted.len() as f64 / reduction_factor).floor() as usize).max(1);
                let bar = sorted[keep - 1];
                self.worse(mine, bar).then(|| {
                    format!(
                        "asha: at rung {} its value {} is not in the top {keep} of the {} trials that reached it (the bar: {})",
                        fmt(rung),
                        fmt(mine),
                        sorted.len(),
                        fmt(bar)
                    )
                })
                .and_then(stop)
            }
            Rule::Percentile { threshold } => {
                // Enough curves must reach min_progression.
                let reaching = curves.iter().filter(|c| c.last().is_some_and(|l| l >= min_prog)).count();
                if reaching < o.min_curves {
                    return None;
                }
                let q = if o.minimize { 100.0 - threshold } else { threshold };
                let mut last = None;
                for at in self.window(curve, p) {
                    let (mine, all) = Self::values_at(curves, curve, at)?;
                    if all.len() < o.min_curves || self.protected(mine, &all) {
                        return None;
                    }
                    let mut sorted = all.clone();
                    sorted.sort_by(f64::total_cmp);
                    let bar = percentile(&sorted, q);
                    if !self.worse(mine, bar) {
                        return None;
                    }
                    last = Some((mine, bar, all.len()));
                }
                let (mine, bar, n) = last?;
                stop(format!(
                    "percentile: its value {} at progression {} is worse than the {}th percentile ({}) of the {n} trials with data there{}",
                    fmt(mine),
                    fmt(p),
                    fmt(threshold),
                    fmt(bar),
                    patience_note(o.patience)
                ))
            }
            Rule::Threshold { value } => {
                let reaching = curves.iter().filter(|c| c.last().is_some_and(|l| l >= min_prog)).count();
                if reaching < o.min_curves {
                    return None;
                }
                let mut mine_last = None;
                for at in self.window(curve, p) {
                    let (mine, all) = Self::values_at(curves, curve, at)?;
                    if self.protected(mine, &all) || !self.worse(mine, value) {
                        return None;
                    }
                    mine_last = Some(mine);
                }
                let mine = mine_last?;
                stop(format!(
                    "threshold: its value {} at progression {} is worse than metric_threshold {}{}",
                    fmt(mine),
                    fmt(p),
                    fmt(value),
                    patience_note(o.patience)
                ))
            }
        }
    }
}

fn patience_note(patience: f64) -> String {
    if patience > 0.0 {
        format!(" at every point of the last {} progressions", fmt(patience))
    } else {
        String::new()
    }
}

/// The highest rung `min * rf^k <= max` that progression `p` has reached, as `k`.
fn rung_of(p: f64, min: f64, max: f64, rf: f64) -> Option<i64> {
    if p < min || min <= 0.0 || rf <= 1.0 {
        return None;
    }
    let mut k = 0i64;
    while min * rf.powi(k as i32 + 1) <= p.min(max) * (1.0 + 1e-12) {
        k += 1;
    }
    Some(k)
}
