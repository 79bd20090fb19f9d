//! What is done to the outcomes before a model learns them: the bad tail winsorized (one
//! diverged run must not flatten the model), then, for the objective, a Yeo-Johnson power
//! transform so that the values the GP sees are closer to normal (HEBO's idea).

/// One outcome per point: its value and SEM, or nothing.
pub type Values = [Option<(f64, Option<f64>)>];

/// Fewer values than this tell no outlier apart (on Branin, clipping from 10 values on did
/// better than from 4, and both better than never).
const WINSORIZE_FROM: usize = 10;

/// Winsorize the bad tail of what a model learns, as Tukey's box plot draws it: a value
/// beyond `q3 + 1.5 IQR` (for a tail of large values; `q1 - 1.5 IQR` for small ones) counts
/// as that cutoff, so that one diverged run (a loss of 1e9) does not flatten the model
/// everywhere else. For a constraint the cutoff is measured from its bound when that is
/// further out, so that no infeasible value is made feasible. Good values are never touched.
pub fn winsorize(values: &mut Values, bad_above: bool, bound: Option<f64>) {
    let mut v: Vec<f64> = finite(values);
    if v.len() < WINSORIZE_FROM {
        return;
    }
    v.sort_by(f64::total_cmp);
    let last = (v.len() - 1) as f64;
    // numpy's percentile methods "lower" (q1) and "higher" (q3).
    let (mut q1, mut q3) = (v[(0.25 * last).floor() as usize], v[(0.75 * last).ceil() as usize]);
    let cutoff = if bad_above {
        q3 = bound.map_or(q3, |b| q3.max(b));
        q3 + 1.5 * (q3 - q1)
    } else {
        q1 = bound.map_or(q1, |b| q1.min(b));
        q1 - 1.5 * (q3 - q1)
    };
    for (value, _) in values.iter_mut().flatten() {
        if (bad_above && *value > cutoff) || (!bad_above && *value < cutoff) {
            *value = cutoff;
        }
    }
}

fn finite(values: &Values) -> Vec<f64> {
    values.iter().flatten().map(|v| v.0).filter(|v| v.is_finite()).collect()
}

/// The range searched for the power.
const LAMBDA: (f64, f64) = (-2.0, 4.0);

/// A Yeo-Johnson transform of the standardized values (standardized first, so that the
/// transform does not depend on the outcome's units or offset), its power fitted by maximum
/// likelihood within `LAMBDA` (the likelihood scikit-learn's `PowerTransformer` maximizes,
/// on unbounded raw values; HEBO uses that). It is strictly increasing for every power, so
/// the best point stays the best; it stretches where values crowd and folds a long tail in.
/// On Hartmann6 (a plateau near 0 and narrow basins) and on Branin (a long tail of bad
/// values) it made the model's proposals better (the figures are in `propose`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerTransform {
    shift: f64,
    scale: f64,
    pub lambda: f64,
}

impl PowerTransform {
    /// The transform fitted on `values`; `None` with fewer than 3 finite values.
    pub fn fit(values: &[f64]) -> Option<PowerTransform> {
        let v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if v.len() < 3 {
            return None;
        }
        let (shift, scale) = super::gp::standardize(&v);
        let z: Vec<f64> = v.iter().map(|y| (y - shift) / scale).collect();
        // The Jacobian's share of the log likelihood, per unit of (lambda - 1).
        let jacobian: f64 = z.iter().map(|&x| x.signum() * x.abs().ln_1p()).sum();
        let n = z.len() as f64;
        let log_lik = |lambda: f64| {
            let t: Vec<f64> = z.iter().map(|&x| yeo_johnson(x, lambda)).collect();
            let mean = t.iter().sum::<f64>() / n;
            let var = t.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
            if !var.is_finite() || var <= 0.0 {
                return f64::NEG_INFINITY;
            }
            -0.5 * n * var.ln() + (lambda - 1.0) * jacobian
        };
        // The profile likelihood is unimodal in practice: a coarse grid, then golden
        // section around its best point.
        let steps = 24;
        let width = (LAMBDA.1 - LAMBDA.0) / steps as f64;
        let grid = (0..=steps).map(|i| LAMBDA.0 + i as f64 * width);
        let start = grid.map(|l| (log_lik(l), l)).fold((f64::NEG_INFINITY, 1.0), |a, b| if b.0 > a.0 { b } else { a });
        if !start.0.is_finite() {
            return None;
        }
        let (mut lo, mut hi) = ((start.1 - width).max(LAMBDA.0), (start.1 + width).min(LAMBDA.1));
        let phi = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..30 {
            let (a, b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
            if log_lik(a) >= log_lik(b) {
                hi = b;
            } else {
                lo = a;
            }
        }
        let mid = (lo + hi) / 2.0;
        let lambda = if log_lik(mid) >= start.0 { mid } else { start.1 };
        Some(PowerTransform { shift, scale, lambda })
    }

    pub fn apply(&self, y: f64) -> f64 {
        yeo_johnson((y - self.shift) / self.scale, self.lambda)
    }

    /// `d apply / dy` at `y`: what an SEM is multiplied by (the delta method).
    pub fn slope(&self, y: f64) -> f64 {
        let x = (y - self.shift) / self.scale;
        let d = if x >= 0.0 { (x + 1.0).powf(self.lambda - 1.0) } else { (1.0 - x).powf(1.0 - self.lambda) };
        d / self.scale
    }

    /// Transform `values` in place, SEMs by the slope at their value.
    pub fn transform(&self, values: &mut Values) {
        for (value, sem) in values.iter_mut().flatten() {
            if !value.is_finite() {
                continue;
            }
            if let Some(s) = sem.as_mut() {
                *s *= self.slope(*value);
            }
            *value = self.apply(*value);
        }
    }
}

/// The Yeo-Johnson transform of `x` with power `lambda`.
fn yeo_johnson(x: f64, lambda: f64) -> f64 {
    if x >= 0.0 {
        if lambda.abs() < 1e-9 {
            x.ln_1p()
        } else {
            ((x + 1.0).powf(lambda) - 1.0) / lambda
        }
    } else if (lambda - 2.0).abs() < 1e-9 {
        -(-x).ln_1p()
    } else {
        -((1.0 - x).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transform_keeps_the_order_and_normalizes_a_skewed_sample() {
        // A long tail of large values, as Branin's.
        let y: Vec<f64> = (1..=40).map(|i| (i as f64 / 6.0).exp()).collect();
        let t = PowerTransform::fit(&y).expect("fitted");
        assert!(t.lambda < 0.5, "a right-skewed sample is folded in: lambda {}", t.lambda);
        let z: Vec<f64> = y.iter().map(|&v| t.apply(v)).collect();
        assert!(z.windows(2).all(|w| w[0] < w[1]), "monotone");
        let skew = |v: &[f64]| {
            let n = v.len() as f64;
            let m = v.iter().sum::<f64>() / n;
            let s = (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n).sqrt();
            v.iter().map(|a| ((a - m) / s).powi(3)).sum::<f64>() / n
        };
        assert!(skew(&z).abs() < skew(&y).abs() / 3.0, "skew {} from {}", skew(&z), skew(&y));
    }

    #[test]
    fn the_slope_is_the_derivative_and_scales_an_sem() {
        let y = [3.0, -1.0, 0.5, 7.0, 2.0, 10.0];
        let t = PowerTransform::fit(&y).expect("fitted");
        for &v in &[-2.0, 0.0, 1.7, 9.0] {
            let h = 1e-6;
            let numeric = (t.apply(v + h) - t.apply(v - h)) / (2.0 * h);
            assert!((numeric - t.slope(v)).abs() < 1e-5 * numeric.abs().max(1.0), "at {v}");
        }
        let mut values = vec![Some((7.0, Some(0.5))), None, Some((2.0, None))];
        t.transform(&mut values);
        assert_eq!(values[0], Some((t.apply(7.0), Some(0.5 * t.slope(7.0)))));
        assert_eq!(values[1], None);
        assert_eq!(values[2], Some((t.apply(2.0), None)));
    }

    #[test]
    fn too_few_or_constant_values_fit_nothing_harmful() {
        assert!(PowerTransform::fit(&[1.0, 2.0]).is_none());
        if let Some(t) = PowerTransform::fit(&[4.0, 4.0, 4.0]) {
            assert!(t.apply(4.0).is_finite());
        }
    }
}
