//! The model of a finished (or running) experiment, for the report: a GP of the objective
//! over the trials that completed, its lengthscales as parameter importance, and its
//! posterior mean over two parameters (the others at the best trial's values).

use super::gp::{Data, Gp, Noise, NOISY_VARIANCE};
use super::Encoder;
use crate::domain::{Arm, SearchSpace};

/// The model is fitted on at most this many trials (the best half, and the rest spread over
/// the others), so that a report of 10,000 trials costs what one of 200 does.
const MAX_POINTS: usize = 200;

pub struct Surrogate {
    gp: Gp,
    encoder: Encoder,
    /// Each searched parameter's importance (1 / lengthscale, summing to 1), in space order.
    pub importance: Vec<(usize, f64)>,
    /// Whether the outcomes are noisy: SEMs were reported, or the fitted noise is a fair
    /// share of the outcomes' spread.
    pub noisy: bool,
}

/// Fit the surrogate of `observed` (an arm and its objective, smaller is better), or none
/// when there are too few trials to say anything.
pub fn surrogate(space: &SearchSpace, observed: &[(Arm, f64)]) -> Option<Surrogate> {
    let with_sem: Vec<(Arm, f64, Option<f64>)> = observed.iter().map(|(a, y)| (a.clone(), *y, None)).collect();
    surrogate_with_sem(space, &with_sem)
}

/// The same, with each outcome's SEM where it was reported: when every outcome has one, it
/// is the model's noise (as the generator does), else the noise is inferred.
pub fn surrogate_with_sem(space: &SearchSpace, observed: &[(Arm, f64, Option<f64>)]) -> Option<Surrogate> {
    let encoder = Encoder::new(space);
    let mut pts: Vec<(Vec<f64>, f64, Option<f64>)> = observed
        .iter()
        .filter(|(_, y, _)| y.is_finite())
        .filter_map(|(a, y, sem)| Some((encoder.encode(space, a)?, *y, *sem)))
        .collect();
    if pts.len() < 3 || encoder.width() == 0 {
        return None;
    }
    if pts.len() > MAX_POINTS {
        pts.sort_by(|a, b| a.1.total_cmp(&b.1));
        let half = MAX_POINTS / 2;
        let rest = &pts[half..];
        let step = rest.len() as f64 / (MAX_POINTS - half) as f64;
        let spread: Vec<(Vec<f64>, f64, Option<f64>)> =
            (0..MAX_POINTS - half).map(|i| rest[(i as f64 * step) as usize].clone()).collect();
        pts.truncate(half);
        pts.extend(spread);
    }
    let d = encoder.width();
    let all_sem = pts.iter().all(|p| p.2.is_some_and(|s| s.is_finite() && s >= 0.0));
    let noise = match all_sem {
        true => Noise::Fixed(pts.iter().map(|p| p.2.unwrap_or(0.0).powi(2)).collect()),
        false => Noise::Inferred,
    };
    let reported = all_sem && pts.iter().any(|p| p.2.is_some_and(|s| s > 0.0));
    let inferred = matches!(noise, Noise::Inferred);
    let data = Data { x: pts.iter().map(|p| p.0.clone()).collect(), y: pts.iter().map(|p| p.1).collect(), noise };
    let gp = Gp::fit(&data, &[Gp::default_hyper(d, inferred)], 100)?;
    let noisy = reported || gp.inferred_noise().is_some_and(|v| v > NOISY_VARIANCE);
    let ls = gp.lengthscales();
    let mut importance: Vec<(usize, f64)> = encoder
        .columns()
        .into_iter()
        .map(|(param, cols)| (param, cols.iter().map(|c| 1.0 / ls[*c]).sum::<f64>() / cols.len() as f64))
        .collect();
    let total: f64 = importance.iter().map(|i| i.1).sum();
    if total > 0.0 {
        for i in &mut importance {
            i.1 /= total;
        }
    }
    Some(Surrogate { gp, encoder, importance, noisy })
}

impl Surrogate {
    /// The model's mean and standard deviation of the objective (of the latent function, no
    /// noise) at `arm`, in the outcome's units.
    pub fn predict(&self, space: &SearchSpace, arm: &Arm) -> Option<(f64, f64)> {
        let x = self.encoder.encode(space, arm)?;
        let (m, v) = self.gp.predict(&x);
        Some((m * self.gp.scale + self.gp.shift, v.max(0.0).sqrt() * self.gp.scale))
    }

    /// The two most important parameters that take a column of their own (no one-hot).
    pub fn top_two(&self) -> Option<(usize, usize)> {
        let cols = self.encoder.columns();
        let mut ranked: Vec<(usize, f64)> =
            self.importance.iter().copied().filter(|(p, _)| cols.iter().any(|(q, c)| q == p && c.len() == 1)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Some((ranked.first()?.0, ranked.get(1)?.0))
    }

    /// The posterior mean on an `n` x `n` grid of unit coordinates of parameters `a` and `b`
    /// (rows along `b`), the others as in `at`.
    pub fn grid(&self, space: &SearchSpace, at: &Arm, a: usize, b: usize, n: usize) -> Option<Vec<Vec<f64>>> {
        let base = self.encoder.encode(space, at)?;
        let cols = self.encoder.columns();
        let col = |p: usize| cols.iter().find(|(q, c)| *q == p && c.len() == 1).map(|(_, c)| c[0]);
        let (ca, cb) = (col(a)?, col(b)?);
        let unit = |i: usize| (i as f64 + 0.5) / n as f64;
        let xs: Vec<Vec<f64>> = (0..n)
            .flat_map(|j| (0..n).map(move |i| (i, j)))
            .map(|(i, j)| {
                let mut x = base.clone();
                x[ca] = unit(i);
                x[cb] = unit(j);
                x
            })
            .collect();
        let mu = self.gp.predict_many(&xs);
        Some(mu.chunks(n).map(|row| row.iter().map(|(m, _)| m * self.gp.scale + self.gp.shift).collect()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Domain, Parameter, Value};

    #[test]
    fn noise_is_told_apart_and_the_model_sees_through_it() {
        let p = |n: &str| Parameter {
            name: n.into(),
            domain: Domain::Float { lo: 0.0, hi: 1.0, log: false, step: None, digits: 6 },
        };
        let space = SearchSpace { parameters: vec![p("a"), p("b")], constraints: vec![] };
        let f = |arm: &Arm| {
            let v = |k: &str| arm.get(k).and_then(Value::as_f64).unwrap();
            (v("a") - 0.4).powi(2) + (v("b") - 0.7).powi(2)
        };
        let arms: Vec<Arm> = (0..40).map(|i| space.arm_from_unit(&super::super::super::sobol_point(i, 2, 9))).collect();
        let clean: Vec<(Arm, f64)> = arms.iter().map(|a| (a.clone(), f(a))).collect();
        assert!(!surrogate(&space, &clean).unwrap().noisy);
        // Deterministic "noise" of a fair size: a hash of the index.
        let noise = |i: usize| ((i as f64 * 12.9898).sin() * 43758.5453).fract() * 0.1;
        let noisy: Vec<(Arm, f64)> = arms.iter().enumerate().map(|(i, a)| (a.clone(), f(a) + noise(i))).collect();
        assert!(surrogate(&space, &noisy).unwrap().noisy);
        // Reported SEMs make it noisy too, and the mean stays close to the truth.
        let with_sem: Vec<(Arm, f64, Option<f64>)> =
            arms.iter().enumerate().map(|(i, a)| (a.clone(), f(a) + noise(i), Some(0.05))).collect();
        let s = surrogate_with_sem(&space, &with_sem).unwrap();
        assert!(s.noisy);
        let (m, sd) = s.predict(&space, &arms[3]).unwrap();
        assert!((m - f(&arms[3])).abs() < 0.1 && sd > 0.0 && sd < 0.1, "{m} {sd} {}", f(&arms[3]));
    }

    #[test]
    fn the_parameter_that_matters_is_the_most_important() {
        let p = |n: &str| Parameter {
            name: n.into(),
            domain: Domain::Float { lo: 0.0, hi: 1.0, log: false, step: None, digits: 6 },
        };
        let space = SearchSpace { parameters: vec![p("flat"), p("steep"), p("mild")], constraints: vec![] };
        let observed: Vec<(Arm, f64)> = (0..60)
            .map(|i| {
                let u = super::super::super::sobol_point(i, 3, 5);
                let arm = space.arm_from_unit(&u);
                let v = |k: &str| arm.get(k).and_then(Value::as_f64).unwrap();
                let y = 10.0 * (v("steep") - 0.3).powi(2) + 0.5 * v("mild");
                (arm, y)
            })
            .collect();
        let s = surrogate(&space, &observed).unwrap();
        let imp: Vec<f64> = s.importance.iter().map(|i| i.1).collect();
        assert!(imp[1] > imp[2] && imp[2] > imp[0], "{imp:?}");
        assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(s.top_two(), Some((1, 2)));
        let g = s.grid(&space, &observed[0].0, 1, 2, 10).unwrap();
        assert_eq!((g.len(), g[0].len()), (10, 10));
        // The mean is lowest near steep = 0.3.
        let row = &g[0];
        let argmin = (0..10).min_by(|i, j| row[*i].total_cmp(&row[*j])).unwrap();
        assert!((2..=4).contains(&argmin), "{row:?}");
    }
}
