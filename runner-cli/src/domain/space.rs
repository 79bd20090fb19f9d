//! The search space: parameters, their transforms from the unit cube, linear parameter
//! constraints, and arms (one setting of every parameter).

use super::Value;

/// Proposed floats keep this many significant digits unless a parameter's `digits` says
/// otherwise (CONFIG.md): the value stored, shown and passed is one and the same.
pub const DEFAULT_DIGITS: u32 = 6;

/// `x` rounded to `digits` significant digits: the double nearest to that decimal, so it
/// prints as that decimal (`0.000316228`, never `0.00031622776601683794`).
pub fn round_digits(x: f64, digits: u32) -> f64 {
    if !x.is_finite() || x == 0.0 || !(1..17).contains(&digits) {
        return x;
    }
    format!("{:.*e}", (digits - 1) as usize, x).parse().unwrap_or(x)
}

/// `x` of the range `[lo, hi]` rounded to `digits` significant digits, or more where the
/// range is narrow for the size of its values: the rounding step never exceeds the range's
/// width times `10^(1 - digits)`, so that [1000, 1000.001] is searched, not rounded to 1000.
pub fn round_in(x: f64, digits: u32, lo: f64, hi: f64) -> f64 {
    let width = hi - lo;
    if !x.is_finite() || x == 0.0 || !(width > 0.0 && width.is_finite()) {
        return round_digits(x, digits);
    }
    let e = x.abs().log10().floor();
    let needed = (e + digits as f64 - width.log10()).ceil();
    let d = if needed > digits as f64 { needed.min(17.0) as u32 } else { digits };
    round_digits(x, d)
}

/// What values a parameter takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A real in `[lo, hi]`; `log` samples in log space; `step` makes it `lo + k*step`;
    /// without a step, proposed values keep `digits` significant digits.
    Float { lo: f64, hi: f64, log: bool, step: Option<f64>, digits: u32 },
    /// An integer in `[lo, hi]` inclusive.
    Int { lo: i64, hi: i64, log: bool, step: Option<i64> },
    /// One of `values`; `ordered` choices are searched by their index.
    Choice { values: Vec<Value>, ordered: bool },
    /// Never searched, always passed.
    Fixed { value: Value },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub domain: Domain,
}

impl Parameter {
    /// Whether the parameter takes a dimension of the unit cube.
    pub fn is_searched(&self) -> bool {
        !matches!(self.domain, Domain::Fixed { .. })
    }

    /// Map `u` in `[0, 1]` to a value, rounded as the parameter requires. Discrete
    /// parameters split the interval into equal cells, so uniform `u` gives uniform values.
    pub fn from_unit(&self, u: f64) -> Value {
        let u = u.clamp(0.0, 1.0);
        match &self.domain {
            Domain::Float { lo, hi, log, step, digits } => {
                if let Some(step) = step {
                    let k_max = ((hi - lo) / step).round();
                    let k = (u * (k_max + 1.0)).floor().min(k_max);
                    Value::Float(round_to_step(lo + k * step, *step).clamp(*lo, *hi))
                } else if *log {
                    Value::Float(round_in((lo.ln() + u * (hi.ln() - lo.ln())).exp(), *digits, *lo, *hi).clamp(*lo, *hi))
                } else {
                    Value::Float(round_in(lo + u * (hi - lo), *digits, *lo, *hi).clamp(*lo, *hi))
                }
            }
            Domain::Int { lo, hi, log, step } => {
                let step = step.unwrap_or(1);
                if *log && step == 1 {
                    // Cells of equal width in log space over [lo - 0.5, hi + 0.5].
                    let (a, b) = ((*lo as f64 - 0.5).max(0.5).ln(), (*hi as f64 + 0.5).ln());
                    let x = (a + u * (b - a)).exp().round() as i64;
                    Value::Int(x.clamp(*lo, *hi))
                } else {
                    let k_max = (hi - lo) / step;
                    let k = ((u * (k_max + 1) as f64).floor() as i64).min(k_max);
                    Value::Int(lo + k * step)
                }
            }
            Domain::Choice { values, .. } => {
                let k = ((u * values.len() as f64).floor() as usize).min(values.len() - 1);
                values[k].clone()
            }
            Domain::Fixed { value } => value.clone(),
        }
    }

    /// Where a value sits in `[0, 1]`: the inverse of [`Parameter::from_unit`], at the
    /// centre of a discrete value's cell so that `from_unit(to_unit(v)) == v`. Unordered
    /// choices get their index cell too; models encode them otherwise.
    pub fn to_unit(&self, v: &Value) -> Option<f64> {
        let cell = |k: f64, cells: f64| ((k + 0.5) / cells).clamp(0.0, 1.0);
        match &self.domain {
            Domain::Float { lo, hi, log, step, .. } => {
                let x = v.as_f64()?;
                if let Some(step) = step {
                    let k_max = ((hi - lo) / step).round();
                    Some(cell(((x - lo) / step).round().clamp(0.0, k_max), k_max + 1.0))
                } else if *log {
                    Some(((x.max(*lo).ln() - lo.ln()) / (hi.ln() - lo.ln())).clamp(0.0, 1.0))
                } else {
                    Some(((x - lo) / (hi - lo)).clamp(0.0, 1.0))
                }
            }
            Domain::Int { lo, hi, log, step } => {
                let x = v.as_f64()?;
                let step = step.unwrap_or(1);
                if *log && step == 1 {
                    let (a, b) = ((*lo as f64 - 0.5).max(0.5).ln(), (*hi as f64 + 0.5).ln());
                    // The middle of the value's cell in log space.
                    let (c0, c1) = ((x - 0.5).max(0.5).max(*lo as f64 - 0.5).ln(), (x + 0.5).ln());
                    Some((((c0 + c1) / 2.0 - a) / (b - a)).clamp(0.0, 1.0))
                } else {
                    let k_max = ((hi - lo) / step) as f64;
                    Some(cell(((x - *lo as f64) / step as f64).round().clamp(0.0, k_max), k_max + 1.0))
                }
            }
            Domain::Choice { values, .. } => {
                let k = values.iter().position(|c| c == v || (c.as_f64().is_some() && c.as_f64() == v.as_f64()))?;
                Some(cell(k as f64, values.len() as f64))
            }
            Domain::Fixed { .. } => None,
        }
    }

    /// The middle of the range (in log space for log scaling), the first value of an
    /// unordered choice, the middle one of an ordered choice.
    pub fn center(&self) -> Value {
        match &self.domain {
            Domain::Choice { values, ordered: false } => values[0].clone(),
            Domain::Choice { values, ordered: true } => values[(values.len() - 1) / 2].clone(),
            Domain::Float { lo, hi, log: true, step: None, digits } => {
                Value::Float(round_in((lo * hi).sqrt(), *digits, *lo, *hi).clamp(*lo, *hi))
            }
            Domain::Float { lo, hi, step, digits, .. } => match step {
                Some(s) => Value::Float(round_to_step(lo + ((hi - lo) / 2.0 / s).round() * s, *s)),
                None => Value::Float(round_in((lo + hi) / 2.0, *digits, *lo, *hi).clamp(*lo, *hi)),
            },
            Domain::Int { lo, hi, log, step } => {
                let s = step.unwrap_or(1);
                let mid = if *log { ((*lo as f64) * (*hi as f64)).sqrt() } else { (*lo as f64 + *hi as f64) / 2.0 };
                let k = ((mid - *lo as f64) / s as f64).round() as i64;
                Value::Int((lo + k * s).clamp(*lo, *hi))
            }
            Domain::Fixed { value } => value.clone(),
        }
    }

    /// Round a value given by a user (initial points) onto the domain, or say why not.
    pub fn coerce(&self, v: &Value) -> Result<Value, String> {
        match (&self.domain, v) {
            (Domain::Float { lo, hi, step, .. }, Value::Int(_) | Value::Float(_)) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                if !(x >= *lo && x <= *hi) {
                    return Err(format!("{x} is outside [{lo}, {hi}]"));
                }
                Ok(Value::Float(match step {
                    Some(s) => round_to_step(lo + ((x - lo) / s).round() * s, *s).min(*hi),
                    None => x,
                }))
            }
            (Domain::Int { lo, hi, step, .. }, Value::Int(_) | Value::Float(_)) => {
                let x = v.as_f64().unwrap_or(f64::NAN);
                if !(x >= *lo as f64 && x <= *hi as f64) {
                    return Err(format!("{x} is outside [{lo}, {hi}]"));
                }
                let s = step.unwrap_or(1) as f64;
                Ok(Value::Int((*lo as f64 + ((x - *lo as f64) / s).round() * s) as i64))
            }
            (Domain::Choice { values, .. }, v) => values
                .iter()
                .find(|c| *c == v || (c.as_f64().is_some() && c.as_f64() == v.as_f64()))
                .cloned()
                .ok_or_else(|| format!("{v} is not one of the values")),
            (Domain::Fixed { value }, v) if value == v => Ok(value.clone()),
            (Domain::Fixed { value }, _) => Err(format!("the parameter is fixed at {value}")),
            (_, v) => Err(format!("a {} does not fit this parameter", v.kind())),
        }
    }

    /// How many values a discrete parameter has; `None` for a continuous float.
    pub fn cardinality(&self) -> Option<u64> {
        match &self.domain {
            Domain::Float { step: None, .. } => None,
            Domain::Float { lo, hi, step: Some(s), .. } => Some(((hi - lo) / s).round() as u64 + 1),
            Domain::Int { lo, hi, step, .. } => Some(((hi - lo) / step.unwrap_or(1)) as u64 + 1),
            Domain::Choice { values, .. } => Some(values.len() as u64),
            Domain::Fixed { .. } => Some(1),
        }
    }

    /// Every value of a discrete parameter, in order.
    pub fn enumerate(&self) -> Option<Vec<Value>> {
        match &self.domain {
            Domain::Float { lo, hi, step: Some(s), .. } => {
                let n = ((hi - lo) / s).round() as i64;
                Some((0..=n).map(|k| Value::Float(round_to_step(lo + k as f64 * s, *s).min(*hi))).collect())
            }
            Domain::Int { lo, hi, step, .. } => {
                let s = step.unwrap_or(1);
                Some((0..=(hi - lo) / s).map(|k| Value::Int(lo + k * s)).collect())
            }
            Domain::Choice { values, .. } => Some(values.clone()),
            Domain::Fixed { value } => Some(vec![value.clone()]),
            Domain::Float { step: None, .. } => None,
        }
    }
}

/// Round `x` to the decimals of `step`, so that `3 * 0.05` is `0.15`. A step of no short
/// decimal form (1/3, say) leaves `x` as it is, and so does a scale a float cannot hold.
fn round_to_step(x: f64, step: f64) -> f64 {
    let step = step.abs();
    if step.is_nan() || step <= 0.0 || !x.is_finite() {
        return x;
    }
    // The decimals of the step: the least d for which step * 10^d is a whole number of at
    // most 15 digits (what a float holds exactly).
    let first = (-step.log10().floor()).max(0.0) as i32;
    for decimals in first..=first + 15 {
        let scale = 10f64.powi(decimals);
        let s = step * scale;
        if !s.is_finite() || s > 1e15 {
            break;
        }
        if (s - s.round()).abs() <= 1e-9 * s.max(1.0) {
            let scaled = x * scale;
            return if scaled.is_finite() && scaled.abs() < 1e15 { scaled.round() / scale } else { x };
        }
    }
    x
}

/// `sum(coefficients[i] * value(names[i])) <= bound`, over float and int parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearConstraint {
    pub terms: Vec<(String, f64)>,
    pub bound: f64,
    /// The text the user wrote, for messages.
    pub text: String,
}

impl LinearConstraint {
    pub fn satisfied(&self, arm: &Arm) -> bool {
        self.lhs(arm) <= self.bound + 1e-9 * self.bound.abs().max(1.0)
    }

    /// The left-hand side at `arm` (NaN when a term's value is not a number).
    pub fn lhs(&self, arm: &Arm) -> f64 {
        self.terms.iter().map(|(n, c)| c * arm.get(n).and_then(Value::as_f64).unwrap_or(f64::NAN)).sum()
    }
}

/// One setting of every parameter, in the order of the search space.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub values: Vec<(String, Value)>,
}

impl Arm {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The parameters as a JSON object, in the order of the space.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.values.iter().map(|(n, v)| (n.clone(), v.to_json())).collect())
    }

    pub fn from_json(space: &SearchSpace, v: &serde_json::Value) -> Option<Arm> {
        let obj = v.as_object()?;
        let values = space
            .parameters
            .iter()
            .map(|p| Some((p.name.clone(), Value::from_json(obj.get(&p.name)?)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Arm { values })
    }

    /// A canonical key: two arms are the same arm when their keys are equal.
    pub fn key(&self) -> String {
        self.to_json().to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchSpace {
    pub parameters: Vec<Parameter>,
    pub constraints: Vec<LinearConstraint>,
}

impl SearchSpace {
    /// The number of unit-cube dimensions (every parameter but fixed ones).
    pub fn dims(&self) -> usize {
        self.parameters.iter().filter(|p| p.is_searched()).count()
    }

    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// The arm at a point of the unit cube (one coordinate per searched parameter).
    pub fn arm_from_unit(&self, u: &[f64]) -> Arm {
        let mut it = u.iter();
        let values = self
            .parameters
            .iter()
            .map(|p| {
                let v = if p.is_searched() { p.from_unit(*it.next().unwrap_or(&0.5)) } else { p.center() };
                (p.name.clone(), v)
            })
            .collect();
        Arm { values }
    }

    pub fn center(&self) -> Arm {
        Arm { values: self.parameters.iter().map(|p| (p.name.clone(), p.center())).collect() }
    }

    pub fn satisfies_constraints(&self, arm: &Arm) -> bool {
        self.constraints.iter().all(|c| c.satisfied(arm))
    }

    /// Every constraint holds without the rounding tolerance of [`Self::satisfies_constraints`]:
    /// what a model's candidate on a constraint's boundary is held to.
    pub fn satisfies_constraints_exactly(&self, arm: &Arm) -> bool {
        self.constraints.iter().all(|c| c.lhs(arm) <= c.bound)
    }

    /// The number of distinct arms when every parameter is discrete, saturating.
    pub fn cardinality(&self) -> Option<u64> {
        self.parameters.iter().try_fold(1u64, |acc, p| p.cardinality().map(|c| acc.saturating_mul(c)))
    }

    /// Every arm of a finite space in lexicographic order (the last parameter fastest),
    /// with `grid_floats` points for continuous floats; constraints not applied.
    pub fn grid(&self, grid_floats: usize) -> GridIter<'_> {
        let axes: Vec<Vec<Value>> = self
            .parameters
            .iter()
            .map(|p| {
                p.enumerate().unwrap_or_else(|| {
                    let n = grid_floats.max(1);
                    (0..n)
                        .map(|i| {
                            let u = if n == 1 { 0.5 } else { i as f64 / (n - 1) as f64 };
                            match &p.domain {
                                Domain::Float { lo, hi, log: false, step: None, digits } => {
                                    Value::Float(round_in(lo + u * (hi - lo), *digits, *lo, *hi).clamp(*lo, *hi))
                                }
                                _ => p.from_unit(u),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        GridIter { space: self, idx: vec![0; axes.len()], axes, done: false }
    }

    /// Whether some point of the box satisfies every linear constraint, decided on the
    /// continuous relaxation by Fourier-Motzkin elimination. `None` when the problem is too
    /// large to decide this way.
    pub fn constraints_feasible(&self) -> Option<bool> {
        if self.constraints.is_empty() {
            return Some(true);
        }
        let names: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
        let n = names.len();
        // rows: a . x <= b
        let mut rows: Vec<(Vec<f64>, f64)> = Vec::new();
        for (i, p) in self.parameters.iter().enumerate() {
            let (lo, hi) = match &p.domain {
                Domain::Float { lo, hi, .. } => (*lo, *hi),
                Domain::Int { lo, hi, .. } => (*lo as f64, *hi as f64),
                _ => continue,
            };
            let mut a = vec![0.0; n];
            a[i] = 1.0;
            rows.push((a.clone(), hi));
            a[i] = -1.0;
            rows.push((a, -lo));
        }
        for c in &self.constraints {
            let mut a = vec![0.0; n];
            for (name, coef) in &c.terms {
                let i = names.iter().position(|x| x == name)?;
                a[i] += coef;
            }
            rows.push((a, c.bound));
        }
        for var in 0..n {
            let (mut pos, mut neg, mut zero) = (Vec::new(), Vec::new(), Vec::new());
            for r in rows {
                if r.0[var] > 1e-12 {
                    pos.push(r)
                } else if r.0[var] < -1e-12 {
                    neg.push(r)
                } else {
                    zero.push(r)
                }
            }
            if pos.len() * neg.len() > 20_000 {
                return None;
            }
            for (ap, bp) in &pos {
                for (an, bn) in &neg {
                    let (sp, sn) = (ap[var], -an[var]);
                    let a: Vec<f64> = ap.iter().zip(an).map(|(x, y)| x / sp + y / sn).collect();
                    zero.push((a, bp / sp + bn / sn));
                }
            }
            rows = zero;
        }
        Some(rows.iter().all(|(_, b)| *b >= -1e-9))
    }
}

/// Iterates the grid of a space; see [`SearchSpace::grid`].
pub struct GridIter<'a> {
    space: &'a SearchSpace,
    axes: Vec<Vec<Value>>,
    idx: Vec<usize>,
    done: bool,
}

impl GridIter<'_> {
    /// The number of grid points, saturating.
    pub fn len_hint(&self) -> u64 {
        self.axes.iter().fold(1u64, |a, x| a.saturating_mul(x.len() as u64))
    }
}

impl Iterator for GridIter<'_> {
    type Item = Arm;
    fn next(&mut self) -> Option<Arm> {
        if self.done {
            return None;
        }
        let values = self
            .space
            .parameters
            .iter()
            .zip(&self.axes)
            .zip(&self.idx)
            .map(|((p, ax), i)| (p.name.clone(), ax[*i].clone()))
            .collect();
        // advance, last axis fastest
        let mut k = self.axes.len();
        loop {
            if k == 0 {
                self.done = true;
                break;
            }
            k -= 1;
            self.idx[k] += 1;
            if self.idx[k] < self.axes[k].len() {
                break;
            }
            self.idx[k] = 0;
        }
        Some(Arm { values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, domain: Domain) -> Parameter {
        Parameter { name: name.into(), domain }
    }

    #[test]
    fn steps_give_round_values_and_cover_the_range_evenly() {
        let d = p("d", Domain::Float { lo: 0.0, hi: 0.5, log: false, step: Some(0.05), digits: DEFAULT_DIGITS });
        assert_eq!(d.from_unit(0.30), Value::Float(0.15));
        assert_eq!(d.from_unit(1.0), Value::Float(0.5));
        assert_eq!(d.from_unit(0.0), Value::Float(0.0));
        assert_eq!(d.enumerate().unwrap().len(), 11);
    }

    #[test]
    fn tiny_steps_keep_the_center_and_the_values_where_they_are() {
        let fine = p("f", Domain::Float { lo: 0.0, hi: 1.0, log: false, step: Some(1e-12), digits: DEFAULT_DIGITS });
        assert_eq!(fine.center(), Value::Float(0.5));
        let tiny =
            p("t", Domain::Float { lo: 0.0, hi: 1e-290, log: false, step: Some(1e-300), digits: DEFAULT_DIGITS });
        let c = tiny.center().as_f64().unwrap();
        assert!((c - 5e-291).abs() < 1e-299, "{c}");
        assert_eq!(round_to_step(0.3333, 1.0 / 3.0), 0.3333, "no decimal form: left alone");
        assert_eq!(round_to_step(7.0 * 2.5, 2.5), 17.5);
    }

    #[test]
    fn int_cells_are_equal() {
        let d = p("n", Domain::Int { lo: 1, hi: 4, log: false, step: None });
        let counts = (0..400).fold([0; 4], |mut c, i| {
            if let Value::Int(v) = d.from_unit((i as f64 + 0.5) / 400.0) {
                c[(v - 1) as usize] += 1;
            }
            c
        });
        assert_eq!(counts, [100; 4]);
    }

    #[test]
    fn proposed_floats_keep_their_significant_digits_and_their_bounds() {
        assert_eq!(round_digits(0.00031622776601683794, 6), 0.000316228);
        assert_eq!(round_digits(-0.4211668799999999, 6), -0.421167);
        assert_eq!(round_digits(123456789.0, 3), 123000000.0);
        assert_eq!(round_digits(0.1 + 0.2, 6).to_string(), "0.3");
        assert_eq!(round_digits(1e-300 / 3.0, 2), 3.3e-301);
        assert_eq!(round_digits(0.0, 6), 0.0);
        let lr = p("lr", Domain::Float { lo: 1e-5, hi: 1e-1, log: true, step: None, digits: 6 });
        for k in 0..=1000 {
            let Value::Float(x) = lr.from_unit(k as f64 / 1000.0) else { panic!() };
            assert!((1e-5..=1e-1).contains(&x), "{x}");
            assert!(x.to_string().trim_start_matches("0.").trim_start_matches('0').len() <= 7, "{x}");
        }
        // Rounding never leaves the range: a bound with more digits is the bound itself.
        let b = p("b", Domain::Float { lo: 0.1234567891, hi: 0.9876543219, log: false, step: None, digits: 3 });
        assert_eq!(b.from_unit(0.0), Value::Float(0.1234567891));
        assert_eq!(b.from_unit(1.0), Value::Float(0.9876543219));
        assert_eq!(b.from_unit(0.5), Value::Float(0.556));
        assert_eq!(b.center(), Value::Float(0.556));
        // A narrow range far from 0 keeps distinct values: more digits where needed.
        let n = p("n", Domain::Float { lo: 1000.0, hi: 1000.001, log: false, step: None, digits: 6 });
        let vals: Vec<Value> = (0..10).map(|k| n.from_unit(k as f64 / 9.0)).collect();
        for w in vals.windows(2) {
            assert_ne!(w[0], w[1], "{vals:?}");
        }
        assert_eq!(round_in(0.4211668799999999, 6, -1.0, 1.0), 0.421167);
    }

    #[test]
    fn log_floats_stay_in_bounds_and_center_is_geometric() {
        let d = p("lr", Domain::Float { lo: 1e-5, hi: 1e-1, log: true, step: None, digits: DEFAULT_DIGITS });
        assert_eq!(d.from_unit(0.0), Value::Float(1e-5));
        assert!(matches!(d.from_unit(1.0), Value::Float(x) if (x - 0.1).abs() < 1e-12));
        assert!(matches!(d.center(), Value::Float(x) if (x - 1e-3).abs() < 1e-12));
    }

    #[test]
    fn to_unit_inverts_from_unit_for_every_kind() {
        let params = [
            p("f", Domain::Float { lo: -2.0, hi: 3.0, log: false, step: None, digits: DEFAULT_DIGITS }),
            p("l", Domain::Float { lo: 1e-4, hi: 1.0, log: true, step: None, digits: DEFAULT_DIGITS }),
            p("s", Domain::Float { lo: 0.0, hi: 0.5, log: false, step: Some(0.05), digits: DEFAULT_DIGITS }),
            p("i", Domain::Int { lo: 1, hi: 9, log: false, step: None }),
            p("j", Domain::Int { lo: 1, hi: 1000, log: true, step: None }),
            p("k", Domain::Int { lo: 0, hi: 20, log: false, step: Some(4) }),
            p("c", Domain::Choice { values: vec![Value::Str("a".into()), Value::Str("b".into())], ordered: false }),
        ];
        for par in &params {
            for i in 0..=200 {
                let v = par.from_unit(i as f64 / 200.0);
                let u = par.to_unit(&v).unwrap();
                assert!((0.0..=1.0).contains(&u), "{}: {u}", par.name);
                let back = par.from_unit(u);
                match (&v, &back) {
                    (Value::Float(a), Value::Float(b)) => {
                        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{}", par.name)
                    }
                    _ => assert_eq!(v, back, "{} at u={u}", par.name),
                }
            }
        }
    }

    #[test]
    fn fourier_motzkin_finds_infeasible_sets() {
        let mut s = SearchSpace {
            parameters: vec![
                p("a", Domain::Float { lo: 0.0, hi: 1.0, log: false, step: None, digits: DEFAULT_DIGITS }),
                p("b", Domain::Float { lo: 0.0, hi: 1.0, log: false, step: None, digits: DEFAULT_DIGITS }),
            ],
            constraints: vec![LinearConstraint {
                terms: vec![("a".into(), 1.0), ("b".into(), 1.0)],
                bound: 0.5,
                text: String::new(),
            }],
        };
        assert_eq!(s.constraints_feasible(), Some(true));
        s.constraints[0].terms = vec![("a".into(), -1.0), ("b".into(), -1.0)];
        s.constraints[0].bound = -2.5; // a + b >= 2.5 in a box of [0,1]^2
        assert_eq!(s.constraints_feasible(), Some(false));
    }

    #[test]
    fn grid_enumerates_every_combination_last_fastest() {
        let s = SearchSpace {
            parameters: vec![
                p("a", Domain::Int { lo: 0, hi: 1, log: false, step: None }),
                p("b", Domain::Choice { values: vec![Value::Str("x".into()), Value::Str("y".into())], ordered: false }),
            ],
            constraints: vec![],
        };
        let keys: Vec<String> = s.grid(5).map(|a| a.key()).collect();
        assert_eq!(keys, [r#"{"a":0,"b":"x"}"#, r#"{"a":0,"b":"y"}"#, r#"{"a":1,"b":"x"}"#, r#"{"a":1,"b":"y"}"#]);
        assert_eq!(s.cardinality(), Some(4));
    }
}
