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

impl ConstraintModel {
    /// ln of the probability that the constraint holds at `x`.
    pub fn log_prob(&self, x: &[f64]) -> f64 {
        let (mu, var) = self.gp.predict(x);
        let sign = if self.upper { 1.0 } else { -1.0 };
        log_ndtr(sign * (self.bound - mu) / var.sqrt())
    }
}

/// Trials still running, in the joint posterior with the candidate: fixed quasi-random
/// draws of their outcomes, each of which may lower the incumbent the candidate must beat.
/// The candidate's expected improvement is averaged over the draws, conditioned on each,
/// so a candidate that only repeats what a running trial will show gains nothing, while
/// one that can beat it still does (BoTorch's joint treatment of pending points, with the
/// candidate integrated analytically).
pub struct Pending {
    points: Vec<Vec<f64>>,
    /// `K^-1 k(X, p)` of each pending point.
    v: Vec<Vec<f64>>,
    /// The inverse posterior covariance of the pending points (row-major, `m x m`).
    sinv: Vec<f64>,
    /// Per draw: `S^-1 (f - mu_p)`, and the incumbent of that draw.
    w: Vec<Vec<f64>>,
    b: Vec<f64>,
}

/// The lower Cholesky factor of an `m x m` row-major matrix, with jitter when needed.
fn cholesky(a: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut jitter = 0.0;
    'retry: for _ in 0..6 {
        let mut l = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..=i {
                let mut sum = a[i * m + j] + if i == j { jitter } else { 0.0 };
                for k in 0..j {
                    sum -= l[i * m + k] * l[j * m + k];
                }
                if i == j {
                    if sum <= 0.0 {
                        jitter = if jitter == 0.0 { 1e-9 } else { jitter * 10.0 };
                        continue 'retry;
                    }
                    l[i * m + i] = sum.sqrt();
                } else {
                    l[i * m + j] = sum / l[j * m + j];
                }
            }
        }
        return Some(l);
    }
    None
}

/// Solve `L x = b` for lower-triangular `L`.
fn solve_lower(l: &[f64], m: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; m];
    for i in 0..m {
        let s: f64 = (0..i).map(|k| l[i * m + k] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * m + i];
    }
    x
}

/// Solve `L^T x = z` for lower-triangular `L`.
fn solve_upper_t(l: &[f64], m: usize, z: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k * m + i] * x[k]).sum();
        x[i] = (z[i] - s) / l[i * m + i];
    }
    x
}

impl Pending {
    /// `normals`: standard normal draws, `m` per draw; `eligible`: which pending points may
    /// become the incumbent (those likely feasible); `best`: the observed incumbent.
    pub fn new(gp: &Gp, points: Vec<Vec<f64>>, eligible: &[bool], best: f64, normals: &[Vec<f64>]) -> Option<Pending> {
        let m = points.len();
        let v: Vec<Vec<f64>> = points.iter().map(|p| gp.solve_cross(p)).collect();
        let mu: Vec<f64> = points.iter().map(|p| gp.predict(p).0).collect();
        let mut cov = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..=i {
                let c = gp.cov_grad(&points[i], &points[j], &v[j], false).0;
                cov[i * m + j] = c;
                cov[j * m + i] = c;
            }
            cov[i * m + i] = cov[i * m + i].max(1e-12);
        }
        let l = cholesky(&cov, m)?;
        let mut sinv = vec![0.0; m * m];
        for j in 0..m {
            // Column j of S^-1 = L^-T L^-1 e_j.
            let mut e = vec![0.0; m];
            e[j] = 1.0;
            let col = solve_upper_t(&l, m, &solve_lower(&l, m, &e));
            for i in 0..m {
                sinv[i * m + j] = col[i];
            }
        }
        let mut w = Vec::with_capacity(normals.len());
        let mut b = Vec::with_capacity(normals.len());
        for z in normals {
            // f = mu + L z, so S^-1 (f - mu) = L^-T z.
            let mut inc = best;
            for i in 0..m {
                let f = mu[i] + (0..=i).map(|k| l[i * m + k] * z[k]).sum::<f64>();
                if eligible[i] {
                    inc = inc.min(f);
                }
            }
            w.push(solve_upper_t(&l, m, z));
            b.push(inc);
        }
        Some(Pending { points, v, sinv, w, b })
    }
}

/// What is maximized over the candidates.
pub struct Acquisition {
    /// The objective, oriented for minimization.
    pub objective: Gp,
    /// The incumbent (standardized); `None` when no observed point is feasible: then only
    /// the probability of feasibility counts.
    pub best: Option<f64>,
    pub constraints: Vec<ConstraintModel>,
    /// Trials still running (with an incumbent only).
    pub pending: Option<Pending>,
}

impl Acquisition {
    /// The value and, with `grad`, its gradient.
    pub fn eval(&self, x: &[f64], grad: bool) -> (f64, Vec<f64>) {
        let d = x.len();
        let mut g = vec![0.0; if grad { d } else { 0 }];
        let mut a = 0.0;
        if let (Some(p), Some(_)) = (&self.pending, self.best) {
            let (mu, var, dmu, dvar) = self.moments(&self.objective, x, grad);
            let (v, dv) = self.pending_ei(p, x, mu, var, &dmu, &dvar, grad);
            a += v;
            g.iter_mut().zip(dv).for_each(|(g, d)| *g += d);
        } else if let Some(best) = self.best {
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
        if let (Some(p), Some(_)) = (&self.pending, self.best) {
            for ((out, (mu, var)), x) in a.iter_mut().zip(self.objective.predict_many(xs)).zip(xs) {
                *out += self.pending_ei(p, x, mu, var, &[], &[], false).0;
            }
        } else if let Some(best) = self.best {
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

    /// ln of the mean over the pending draws of the candidate's expected improvement given
    /// each draw, and its gradient; `mu`, `var` (and their gradients): the candidate's
    /// marginal posterior.
    #[allow(clippy::too_many_arguments)]
    fn pending_ei(
        &self,
        p: &Pending,
        x: &[f64],
        mu: f64,
        var: f64,
        dmu: &[f64],
        dvar: &[f64],
        grad: bool,
    ) -> (f64, Vec<f64>) {
        let (m, d) = (p.points.len(), x.len());
        let cs: Vec<(f64, Vec<f64>)> =
            p.points.iter().zip(&p.v).map(|(pt, v)| self.objective.cov_grad(x, pt, v, grad)).collect();
        // q = S^-1 c; the conditional variance var - c.q and its gradient dvar - 2 q.dc.
        let q: Vec<f64> = (0..m).map(|i| (0..m).map(|j| p.sinv[i * m + j] * cs[j].0).sum()).collect();
        let raw = var - (0..m).map(|i| cs[i].0 * q[i]).sum::<f64>();
        let vc = raw.max(1e-12);
        let s = vc.sqrt();
        let mut dvc = vec![0.0; if grad { d } else { 0 }];
        if grad && raw > 1e-12 {
            for t in 0..d {
                dvc[t] = dvar[t] - 2.0 * (0..m).map(|i| q[i] * cs[i].1[t]).sum::<f64>();
            }
        }
        let terms: Vec<(f64, f64)> =
            p.w.iter()
                .zip(&p.b)
                .map(|(w, b)| {
                    let mu_s = mu + (0..m).map(|i| cs[i].0 * w[i]).sum::<f64>();
                    let z = (b - mu_s) / s;
                    (log_h(z) + s.ln(), z)
                })
                .collect();
        let top = terms.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            return (top, vec![0.0; if grad { d } else { 0 }]);
        }
        let weights: Vec<f64> = terms.iter().map(|t| (t.0 - top).exp()).collect();
        let total: f64 = weights.iter().sum();
        let value = top + (total / terms.len() as f64).ln();
        if !grad {
            return (value, Vec::new());
        }
        let mut g = vec![0.0; d];
        for ((wt, (_, z)), w) in weights.iter().zip(&terms).zip(&p.w) {
            let pi = wt / total;
            let dz = dlog_h(*z);
            let ds = (1.0 - dz * z) / s;
            for t in 0..d {
                let dmu_s = dmu[t] + (0..m).map(|i| w[i] * cs[i].1[t]).sum::<f64>();
                g[t] += pi * (-dz / s * dmu_s + ds * dvc[t] / (2.0 * s));
            }
        }
        (value, g)
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
        let normals: Vec<Vec<f64>> = (0..16)
            .map(|i| vec![((i as f64 + 0.5) / 16.0 - 0.5) * 4.0, ((i * 7 % 16) as f64 / 16.0 - 0.5) * 3.0])
            .collect();
        let pending = Pending::new(&objective, vec![vec![0.3, 0.55], vec![0.7, 0.2]], &[true, true], -1.0, &normals);
        let acq = Acquisition {
            objective: objective.clone(),
            best: Some(-1.0),
            constraints: vec![ConstraintModel { gp: cg.clone(), bound, upper: true }],
            pending: None,
        };
        let joint = Acquisition {
            objective,
            best: Some(-1.0),
            constraints: vec![ConstraintModel { gp: cg, bound, upper: true }],
            pending,
        };
        check_gradient(&acq);
        check_gradient(&joint);
        // A candidate on a running trial gains (almost) nothing over the plain EI there.
        let at = [0.3, 0.55];
        assert!(
            joint.eval(&at, false).0 < acq.eval(&at, false).0 - 2.0,
            "{} vs {}",
            joint.eval(&at, false).0,
            acq.eval(&at, false).0
        );
    }

    #[test]
    fn a_noisy_incumbent_drawn_with_the_best_points_gives_them_no_credit() {
        // Noisy values (SEM 0.2) of a bowl: with the plug-in incumbent, the best observed
        // point still shows expected improvement (its latent value is uncertain); drawn
        // jointly with the best points, as the generator does under noise, it shows none,
        // while a point away from the data keeps most of its value.
        let x: Vec<Vec<f64>> = (0..14).map(|i| vec![(i as f64 * 0.37) % 1.0, (i as f64 * 0.61) % 1.0]).collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, p)| (p[0] - 0.3).powi(2) + (p[1] - 0.6).powi(2) + 0.2 * ((i * 7 % 5) as f64 - 2.0) / 2.0)
            .collect();
        let data = Data { x: x.clone(), y, noise: Noise::Fixed(vec![0.04; 14]) };
        let gp = Gp::fit(&data, &[Gp::default_hyper(2, false)], 50).unwrap();
        let mut by_mean: Vec<(f64, Vec<f64>)> = x.iter().map(|p| (gp.predict(p).0, p.clone())).collect();
        by_mean.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = by_mean[0].0;
        let baseline: Vec<Vec<f64>> = by_mean.iter().take(4).map(|b| b.1.clone()).collect();
        let normals: Vec<Vec<f64>> = (0..64)
            .map(|i| (0..4).map(|k| (((i * (2 * k + 3) + k) % 64) as f64 + 0.5) / 64.0 * 5.0 - 2.5).collect())
            .collect();
        let joint = Pending::new(&gp, baseline, &[true; 4], f64::INFINITY, &normals);
        let plain = Acquisition { objective: gp.clone(), best: Some(best), constraints: vec![], pending: None };
        let noisy = Acquisition { objective: gp, best: Some(best), constraints: vec![], pending: joint };
        let at_best = &by_mean[0].1;
        assert!(
            noisy.eval(at_best, false).0 < plain.eval(at_best, false).0 - 3.0,
            "{} vs {}",
            noisy.eval(at_best, false).0,
            plain.eval(at_best, false).0
        );
        let away = [0.95, 0.05];
        assert!((noisy.eval(&away, false).0 - plain.eval(&away, false).0).abs() < 1.5);
        check_gradient(&noisy);
    }

    fn check_gradient(acq: &Acquisition) {
        for p in [[0.2, 0.9], [0.55, 0.45], [0.99, 0.01], [0.31, 0.52]] {
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
