//! The acquisition: log expected improvement (stable far in the tails, as LogEI is), plus
//! the log probability that each outcome constraint holds.

use super::gp::Gp;

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_7;

/// ln of the standard normal density.
pub fn log_phi(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// Mills' ratio `Q(t) / phi(t)` for `t >= 0`.
fn mills(t: f64) -> f64 {
    if t < 20.0 {
        0.5 * libm::erfc(t / std::f64::consts::SQRT_2) / log_phi(t).exp()
    } else {
        let u = 1.0 / (t * t);
        (1.0 - u * (1.0 - 3.0 * u * (1.0 - 5.0 * u * (1.0 - 7.0 * u)))) / t
    }
}

/// ln of the standard normal distribution function, accurate far in the lower tail.
pub fn log_ndtr(z: f64) -> f64 {
    if z > -5.0 {
        (0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)).ln()
    } else {
        log_phi(z) + mills(-z).ln()
    }
}

/// `ln h(z)` with `h(z) = phi(z) + z Phi(z)`, the expected improvement of a unit normal.
pub fn log_h(z: f64) -> f64 {
    if z > -1.0 {
        let phi = log_phi(z).exp();
        (phi + z * log_ndtr(z).exp()).ln()
    } else {
        // h(z) = phi(z) (1 - t m(t)), t = -z; 1 - t m(t) by its series far out.
        let t = -z;
        let g = if t < 20.0 {
            1.0 - t * mills(t)
        } else {
            let u = 1.0 / (t * t);
            u * (1.0 - 3.0 * u * (1.0 - 5.0 * u * (1.0 - 7.0 * u)))
        };
        log_phi(z) + g.max(f64::MIN_POSITIVE).ln()
    }
}

/// `d ln h / dz = Phi(z) / h(z)`.
fn dlog_h(z: f64) -> f64 {
    (log_ndtr(z) - log_h(z)).exp()
}

/// `d ln Phi / dz = phi(z) / Phi(z)`.
fn dlog_ndtr(z: f64) -> f64 {
    (log_phi(z) - log_ndtr(z)).exp()
}

/// An outcome constraint as its GP sees it: `f(x) <= bound` (standardized), or `>=`.
pub struct ConstraintModel {
    pub gp: Gp,
    pub bound: f64,
    pub upper: bool,
}

/// What is maximized over the candidates.
pub struct Acquisition {
    /// The objective, oriented for minimization, with pending trials fantasized.
    pub objective: Gp,
    /// The incumbent (standardized); `None` when no observed point is feasible: then only
    /// the probability of feasibility counts.
    pub best: Option<f64>,
    pub constraints: Vec<ConstraintModel>,
}

impl Acquisition {
    /// The value and, with `grad`, its gradient.
    pub fn eval(&self, x: &[f64], grad: bool) -> (f64, Vec<f64>) {
        let d = x.len();
        let mut g = vec![0.0; if grad { d } else { 0 }];
        let mut a = 0.0;
        if let Some(best) = self.best {
            let (mu, var, dmu, dvar) = self.moments(&self.objective, x, grad);
            let s = var.sqrt();
            let z = (best - mu) / s;
            a += log_h(z) + s.ln();
            if grad {
                let dz = dlog_h(z);
                // z = (best - mu) / s: dz/dmu = -1/s, dz/ds = -z/s; and + ln s.
                let ds = (1.0 - dz * z) / s;
                for t in 0..d {
                    g[t] += -dz / s * dmu[t] + ds * dvar[t] / (2.0 * s);
                }
            }
        }
        for c in &self.constraints {
            let (mu, var, dmu, dvar) = self.moments(&c.gp, x, grad);
            let s = var.sqrt();
            let sign = if c.upper { 1.0 } else { -1.0 };
            let u = sign * (c.bound - mu) / s;
            a += log_ndtr(u);
            if grad {
                let du = dlog_ndtr(u);
                for t in 0..d {
                    // du/dmu = -sign/s; du/ds = -u/s
                    g[t] += du * (-sign / s * dmu[t] - u / s * dvar[t] / (2.0 * s));
                }
            }
        }
        (a, g)
    }

    /// The values at many points at once.
    pub fn eval_many(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        let mut a = vec![0.0; xs.len()];
        if let Some(best) = self.best {
            for (out, (mu, var)) in a.iter_mut().zip(self.objective.predict_many(xs)) {
                let s = var.sqrt();
                *out += log_h((best - mu) / s) + s.ln();
            }
        }
        for c in &self.constraints {
            let sign = if c.upper { 1.0 } else { -1.0 };
            for (out, (mu, var)) in a.iter_mut().zip(c.gp.predict_many(xs)) {
                *out += log_ndtr(sign * (c.bound - mu) / var.sqrt());
            }
        }
        a
    }

    fn moments(&self, gp: &Gp, x: &[f64], grad: bool) -> (f64, f64, Vec<f64>, Vec<f64>) {
        if grad {
            gp.predict_grad(x)
        } else {
            let (m, v) = gp.predict(x);
            (m, v, vec![], vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gp::{Data, Noise};
    use super::*;

    #[test]
    fn log_h_is_continuous_accurate_and_finite_far_out() {
        // Direct evaluation where it is accurate.
        for z in [-0.99, -0.5, 0.0, 0.7, 3.0] {
            let phi = (-0.5f64 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let cdf = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
            assert!((log_h(z) - (phi + z * cdf).ln()).abs() < 1e-12, "{z}");
        }
        // Across the branch points.
        for z0 in [-1.0, -20.0] {
            assert!((log_h(z0 - 1e-9) - log_h(z0 + 1e-9)).abs() < 1e-6, "{z0}");
        }
        // Far out: ln h(z) ~ -z^2/2 - ln(sqrt(2 pi)) - 2 ln|z|.
        let z = -1e3;
        let approx = -0.5 * z * z - LN_SQRT_2PI - 2.0 * (-z).ln();
        assert!((log_h(z) - approx).abs() < 1e-5);
        assert!(log_h(-1e150).is_finite() || log_h(-1e150) == f64::NEG_INFINITY);
        for z in [-40.0, -10.0, -1.5, 0.3] {
            let e = 1e-6;
            let fd = (log_h(z + e) - log_h(z - e)) / (2.0 * e);
            assert!((fd - dlog_h(z)).abs() < 1e-5 * fd.abs().max(1.0), "{z}: {fd} vs {}", dlog_h(z));
        }
        assert!((log_ndtr(-40.0) - (-804.608_442_013_754_8)).abs() < 1e-6);
    }

    #[test]
    fn the_acquisition_gradient_matches_finite_differences() {
        let x: Vec<Vec<f64>> = (0..12).map(|i| vec![(i as f64 * 0.37) % 1.0, (i as f64 * 0.61) % 1.0]).collect();
        let y: Vec<f64> = x.iter().map(|p| (p[0] - 0.3).powi(2) + (p[1] - 0.6).powi(2)).collect();
        let c: Vec<f64> = x.iter().map(|p| p[0] + p[1]).collect();
        let fit = |y: Vec<f64>| {
            Gp::fit(&Data { x: x.clone(), y, noise: Noise::Inferred }, &[Gp::default_hyper(2, true)], 50).unwrap()
        };
        let objective = fit(y);
        let cg = fit(c);
        let bound = (1.0 - cg.shift) / cg.scale;
        let acq = Acquisition {
            objective,
            best: Some(-1.0),
            constraints: vec![ConstraintModel { gp: cg, bound, upper: true }],
        };
        for p in [[0.2, 0.9], [0.55, 0.45], [0.99, 0.01]] {
            let (_, g) = acq.eval(&p, true);
            for t in 0..2 {
                let e = 1e-6;
                let (mut a, mut b) = (p, p);
                a[t] += e;
                b[t] -= e;
                let fd = (acq.eval(&a, false).0 - acq.eval(&b, false).0) / (2.0 * e);
                let many = acq.eval_many(&[a.to_vec()])[0];
                assert!((many - acq.eval(&a, false).0).abs() < 1e-9);
                assert!((fd - g[t]).abs() < 1e-4 * fd.abs().max(1.0), "{p:?}[{t}]: {fd} vs {}", g[t]);
            }
        }
    }
}
