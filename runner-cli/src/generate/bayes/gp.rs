//! A Gaussian process with a constant mean (fitted, or the worst outcome: [`Mean`]) and a
//! Matern-5/2 kernel with one lengthscale per input (ARD), over inputs in the unit cube and
//! standardized outcomes, with BoTorch's current
//! priors: no output scale, a log-normal prior on each lengthscale whose median grows with
//! the square root of the dimension, and a log-normal prior on the noise. Hyperparameters are
//! the maximum a posteriori point, found by L-BFGS in log space from several starts.

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// The smallest inferred noise variance (in standardized units), as BoTorch's.
const MIN_NOISE: f64 = 1e-4;
/// Added to the diagonal when fixed noise is (nearly) zero, for a stable factorization.
const JITTER: f64 = 1e-6;
const LOG_2PI: f64 = 1.837_877_066_409_345_5;

/// Observation noise: inferred (one variance for every point), or the reported SEMs.
#[derive(Debug, Clone)]
pub enum Noise {
    Inferred,
    /// A variance per point, in standardized units.
    Fixed(Vec<f64>),
}

/// The GP's constant prior mean: what it expects where it has seen nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mean {
    /// Fitted with the other hyperparameters (flat prior), as BoTorch's.
    Fitted,
    /// This value (in the outcomes' units), not fitted.
    Fixed(f64),
}

/// The inferred noise variance (standardized units) above which an objective counts as
/// noisy: a noise standard deviation of about 7% of the outcomes' spread or more.
pub const NOISY_VARIANCE: f64 = 5e-3;

/// The training data: `n` points of `d` coordinates in `[0, 1]` and their outcomes.
#[derive(Debug, Clone)]
pub struct Data {
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
    pub noise: Noise,
}

/// Hyperparameters: `d` log lengthscales, then the log noise (inferred noise only), then
/// the constant mean (standardized units).
pub type Hyper = Vec<f64>;

/// A fitted GP, ready to predict.
#[derive(Debug, Clone)]
pub struct Gp {
    d: usize,
    x: Vec<f64>,
    n: usize,
    inv_ls2: Vec<f64>,
    mean: f64,
    alpha: Vec<f64>,
    /// The inverse of the covariance of the observations.
    kinv: Mat<f64>,
    pub hyper: Hyper,
    /// Outcome standardization: `y_std = (y - shift) / scale`.
    pub shift: f64,
    pub scale: f64,
}

/// The lengthscale prior of BoTorch's defaults: LogNormal(sqrt(2) + ln(d)/2, sqrt(3)).
fn ls_prior(d: usize) -> (f64, f64) {
    (std::f64::consts::SQRT_2 + (d.max(1) as f64).ln() / 2.0, 3f64.sqrt())
}
/// The noise prior: LogNormal(-4, 1).
const NOISE_PRIOR: (f64, f64) = (-4.0, 1.0);

struct Problem<'a> {
    d: usize,
    x: &'a [f64],
    y: &'a [f64],
    fixed: Option<&'a [f64]>,
    /// The constant mean when it is not fitted (the last hyperparameter is then ignored).
    mean: Option<f64>,
}

/// The Matern-5/2 kernel at scaled squared distance `s` (`r^2`), and `-2 dk/ds`, which
/// every gradient needs: `dk/dx_t = -g (x_t - x'_t) / l_t^2`, `dk/dln l_t = g (x_t - x'_t)^2 / l_t^2`.
/// (Matern-5/2 beat the RBF kernel on Hartmann6 in the benchmark, with the same priors.)
#[inline]
fn kern(s: f64) -> (f64, f64) {
    let r5 = (5.0 * s).sqrt();
    let e = (-r5).exp();
    ((1.0 + r5 + 5.0 * s / 3.0) * e, 5.0 / 3.0 * (1.0 + r5) * e)
}

/// The kernel matrix without noise, and `-2 dk/ds` at each pair.
fn kernel_matrix(x: &[f64], n: usize, d: usize, inv_ls2: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut k = vec![0.0; n * n];
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        k[i * n + i] = 1.0;
        let xi = &x[i * d..(i + 1) * d];
        for j in 0..i {
            let xj = &x[j * d..(j + 1) * d];
            let mut s = 0.0;
            for t in 0..d {
                let u = xi[t] - xj[t];
                s += u * u * inv_ls2[t];
            }
            let (v, w) = kern(s);
            k[i * n + j] = v;
            k[j * n + i] = v;
            g[i * n + j] = w;
        }
    }
    (k, g)
}

/// Cholesky of `k` (+ jitter if needed); the inverse, `alpha = K^-1 r` and `log|K|`.
fn factor(k: &[f64], n: usize, r: &[f64]) -> Option<(Mat<f64>, Vec<f64>, f64)> {
    let mut jitter = 0.0;
    for _ in 0..6 {
        let m = Mat::<f64>::from_fn(n, n, |i, j| k[j * n + i] + if i == j { jitter } else { 0.0 });
        if let Ok(llt) = m.llt(Side::Lower) {
            let l = llt.L();
            let logdet: f64 = (0..n).map(|i| 2.0 * l[(i, i)].ln()).sum();
            let inv = llt.inverse();
            let alpha = symv(&inv, r);
            return Some((inv, alpha, logdet));
        }
        jitter = if jitter == 0.0 { 1e-8 } else { jitter * 10.0 };
    }
    None
}

/// `a . b` with independent partial sums, so that it vectorizes.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for t in 0..4 {
            acc[t] += x[t] * y[t];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `a * v` for a symmetric `a` (its columns are its rows).
fn symv(a: &Mat<f64>, v: &[f64]) -> Vec<f64> {
    (0..a.ncols()).map(|i| dot(a.col_as_slice(i), v)).collect()
}

impl Problem<'_> {
    fn n(&self) -> usize {
        self.y.len()
    }

    /// The negative log posterior of `h` and its gradient.
    fn eval(&self, h: &[f64]) -> Option<(f64, Vec<f64>)> {
        let (n, d) = (self.n(), self.d);
        if h.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let inv_ls2: Vec<f64> = h[..d].iter().map(|l| (-2.0 * l).exp()).collect();
        let (noise_grad_scale, fitted_mean) = match self.fixed {
            None => (Some(h[d].exp()), h[d + 1]),
            Some(_) => (None, h[d]),
        };
        let mean = self.mean.unwrap_or(fitted_mean);
        let (mut k, kg) = kernel_matrix(self.x, n, d, &inv_ls2);
        for i in 0..n {
            k[i * n + i] += match self.fixed {
                None => MIN_NOISE + h[d].exp(),
                Some(f) => f[i] + JITTER,
            };
        }
        let r: Vec<f64> = self.y.iter().map(|y| y - mean).collect();
        let (kinv, alpha, logdet) = factor(&k, n, &r)?;
        let fit = dot(&r, &alpha);
        let mut nlp = 0.5 * fit + 0.5 * logdet + 0.5 * n as f64 * LOG_2PI;
        // W = K^-1 - alpha alpha^T; d nll / d p = 0.5 tr(W dK/dp).
        let mut g = vec![0.0; h.len()];
        for i in 0..n {
            let xi = &self.x[i * d..(i + 1) * d];
            let col = kinv.col_as_slice(i);
            for j in 0..i {
                let w = col[j] - alpha[i] * alpha[j];
                let wk = w * kg[i * n + j];
                if wk == 0.0 {
                    continue;
                }
                let xj = &self.x[j * d..(j + 1) * d];
                for t in 0..d {
                    let u = xi[t] - xj[t];
                    // Both (i, j) and (j, i): the 0.5 cancels.
                    g[t] += wk * u * u * inv_ls2[t];
                }
            }
        }
        if let Some(e) = noise_grad_scale {
            let trw: f64 = (0..n).map(|i| kinv[(i, i)] - alpha[i] * alpha[i]).sum();
            g[d] = 0.5 * trw * e;
        }
        let gm = h.len() - 1;
        g[gm] = if self.mean.is_some() { 0.0 } else { -alpha.iter().sum::<f64>() };
        // Priors (as densities of the lengthscale and noise themselves).
        let (mu, sd) = ls_prior(d);
        for t in 0..d {
            let z = (h[t] - mu) / sd;
            nlp += h[t] + 0.5 * z * z;
            g[t] += 1.0 + z / sd;
        }
        if let Some(e) = noise_grad_scale {
            let noise = MIN_NOISE + e;
            let ln = noise.ln();
            let z = (ln - NOISE_PRIOR.0) / NOISE_PRIOR.1;
            nlp += ln + 0.5 * z * z;
            g[d] += (1.0 + z / NOISE_PRIOR.1) * e / noise;
        }
        nlp.is_finite().then_some((nlp, g))
    }
}

struct ArgminProblem<'a>(&'a Problem<'a>);

impl CostFunction for ArgminProblem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, h: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.0.eval(h).map_or(f64::INFINITY, |(v, _)| v))
    }
}

impl Gradient for ArgminProblem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, h: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        self.0
            .eval(h)
            .map(|(_, g)| g)
            .ok_or_else(|| argmin::core::Error::msg("the covariance is not positive definite"))
    }
}

/// Standardize outcomes: mean 0, standard deviation 1 (1 when they are all equal).
pub fn standardize(y: &[f64]) -> (f64, f64) {
    let n = y.len().max(1) as f64;
    let m = y.iter().sum::<f64>() / n;
    let v = y.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0).max(1.0);
    let s = v.sqrt();
    (m, if s > 1e-12 * m.abs().max(1.0) && s.is_finite() { s } else { 1.0 })
}

impl Gp {
    /// The prior's mode: where a fit starts when nothing better is known.
    pub fn default_hyper(d: usize, inferred_noise: bool) -> Hyper {
        let (mu, sd) = ls_prior(d);
        let mut h = vec![mu - sd * sd; d];
        if inferred_noise {
            h.push((NOISE_PRIOR.0 - NOISE_PRIOR.1 * NOISE_PRIOR.1).exp().ln());
        }
        h.push(0.0);
        h
    }

    /// Fit by MAP from each start (the previous fit's hyperparameters first, if they fit
    /// this data's shape) and keep the best. `max_iters` bounds each local search.
    pub fn fit(data: &Data, starts: &[Hyper], max_iters: u64) -> Option<Gp> {
        Gp::fit_with(data, starts, max_iters, Mean::Fitted)
    }

    /// [`Gp::fit`] with the constant mean chosen by `mean`.
    pub fn fit_with(data: &Data, starts: &[Hyper], max_iters: u64, mean: Mean) -> Option<Gp> {
        let (x, d, y_std, fixed, shift, scale) = Self::prepare(data)?;
        let fixed_mean = match mean {
            Mean::Fitted => None,
            Mean::Fixed(v) => Some((v - shift) / scale),
        };
        let problem = Problem { d, x: &x, y: &y_std, fixed: fixed.as_deref(), mean: fixed_mean };
        let len = d + if fixed.is_none() { 2 } else { 1 };
        let mut best: Option<(f64, Hyper)> = None;
        for start in starts.iter().filter(|s| s.len() == len) {
            let mut start = start.clone();
            if let Some(m) = fixed_mean {
                start[len - 1] = m;
            }
            let Some((v0, _)) = problem.eval(&start) else { continue };
            let (v, h) = match minimize_unconstrained(&problem, start.clone(), max_iters) {
                Some((v, h)) if v <= v0 => (v, h),
                _ => (v0, start),
            };
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, h));
            }
        }
        let (_, mut hyper) = best?;
        if let Some(m) = fixed_mean {
            hyper[len - 1] = m;
        }
        Gp::with_hyper(x, d, y_std, fixed.unwrap_or_default(), hyper, shift, scale)
    }

    /// The GP of `data` with hyperparameters already known (fitted on a subset of it, whose
    /// standardization differs); a fixed mean is set again in this data's units.
    pub fn condition(data: &Data, mut hyper: Hyper, mean: Mean) -> Option<Gp> {
        let (x, d, y_std, fixed, shift, scale) = Self::prepare(data)?;
        if let Mean::Fixed(v) = mean {
            *hyper.last_mut()? = (v - shift) / scale;
        }
        Gp::with_hyper(x, d, y_std, fixed.unwrap_or_default(), hyper, shift, scale)
    }

    /// The inferred noise variance (standardized), if the noise was inferred.
    pub fn inferred_noise(&self) -> Option<f64> {
        (self.hyper.len() == self.d + 2).then(|| MIN_NOISE + self.hyper[self.d].exp())
    }

    /// Flattened inputs, their dimension, standardized outcomes, fixed noise in standardized
    /// units (if any), and the standardization.
    #[allow(clippy::type_complexity)]
    fn prepare(data: &Data) -> Option<(Vec<f64>, usize, Vec<f64>, Option<Vec<f64>>, f64, f64)> {
        let d = data.x.first()?.len();
        let (shift, scale) = standardize(&data.y);
        let y_std: Vec<f64> = data.y.iter().map(|v| (v - shift) / scale).collect();
        let x: Vec<f64> = data.x.iter().flatten().copied().collect();
        let fixed: Option<Vec<f64>> = match &data.noise {
            Noise::Inferred => None,
            Noise::Fixed(v) => Some(v.iter().map(|s| s / (scale * scale)).collect()),
        };
        Some((x, d, y_std, fixed, shift, scale))
    }

    fn with_hyper(
        x: Vec<f64>,
        d: usize,
        y_std: Vec<f64>,
        fixed: Vec<f64>,
        hyper: Hyper,
        shift: f64,
        scale: f64,
    ) -> Option<Gp> {
        let n = y_std.len();
        let inv_ls2: Vec<f64> = hyper[..d].iter().map(|l| (-2.0 * l).exp()).collect();
        let inferred = hyper.len() == d + 2;
        let noise: Vec<f64> = if inferred {
            vec![MIN_NOISE + hyper[d].exp(); n]
        } else {
            (0..n).map(|i| fixed.get(i).copied().unwrap_or(0.0) + JITTER).collect()
        };
        let mean = *hyper.last()?;
        let (mut k, _) = kernel_matrix(&x, n, d, &inv_ls2);
        for i in 0..n {
            k[i * n + i] += noise[i];
        }
        let r: Vec<f64> = y_std.iter().map(|y| y - mean).collect();
        let (kinv, alpha, _) = factor(&k, n, &r)?;
        Some(Gp { d, x, n, inv_ls2, mean, alpha, kinv, hyper, shift, scale })
    }

    /// The number of points the model is conditioned on.
    pub fn points(&self) -> usize {
        self.n
    }

    /// The lengthscales (in unit-cube coordinates).
    pub fn lengthscales(&self) -> Vec<f64> {
        self.inv_ls2.iter().map(|v| 1.0 / v.sqrt()).collect()
    }

    /// Posterior mean and variance of the latent function at `x` (standardized units).
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let (k, _) = self.cross(x);
        let mu = self.mean + dot(&k, &self.alpha);
        let v = symv(&self.kinv, &k);
        let var = 1.0 - dot(&k, &v);
        (mu, var.max(1e-12))
    }

    /// [`Gp::predict`] at many points at once (one matrix product).
    pub fn predict_many(&self, xs: &[Vec<f64>]) -> Vec<(f64, f64)> {
        let n = self.n;
        let ks = Mat::<f64>::from_fn(n, xs.len(), |j, p| {
            let xj = &self.x[j * self.d..(j + 1) * self.d];
            let s: f64 = (0..self.d).map(|t| (xs[p][t] - xj[t]) * (xs[p][t] - xj[t]) * self.inv_ls2[t]).sum();
            kern(s).0
        });
        let v = &self.kinv * &ks;
        (0..xs.len())
            .map(|p| {
                let (k, vp) = (ks.col_as_slice(p), v.col_as_slice(p));
                (self.mean + dot(k, &self.alpha), (1.0 - dot(k, vp)).max(1e-12))
            })
            .collect()
    }

    /// Mean, variance and their gradients with respect to `x`.
    pub fn predict_grad(&self, x: &[f64]) -> (f64, f64, Vec<f64>, Vec<f64>) {
        let (n, d) = (self.n, self.d);
        let (k, kg) = self.cross(x);
        let mu = self.mean + dot(&k, &self.alpha);
        let v = symv(&self.kinv, &k);
        let raw = 1.0 - dot(&k, &v);
        let mut dmu = vec![0.0; d];
        let mut dvar = vec![0.0; d];
        for j in 0..n {
            let xj = &self.x[j * d..(j + 1) * d];
            let (a, b) = (self.alpha[j] * kg[j], -2.0 * v[j] * kg[j]);
            for t in 0..d {
                // d k_j / d x_t = (dk/ds) (2 (x_t - X_jt) / l_t^2) = -g_j (x_t - X_jt) / l_t^2
                let dk = -(x[t] - xj[t]) * self.inv_ls2[t];
                dmu[t] += a * dk;
                dvar[t] += b * dk;
            }
        }
        if raw < 1e-12 {
            dvar.iter_mut().for_each(|g| *g = 0.0);
        }
        (mu, raw.max(1e-12), dmu, dvar)
    }

    /// `K^-1 k(X, p)`: what the posterior covariance with `p` needs, once per point.
    pub fn solve_cross(&self, p: &[f64]) -> Vec<f64> {
        symv(&self.kinv, &self.cross(p).0)
    }

    /// The posterior covariance of the latent function at `x` and `p`, given
    /// `vp = solve_cross(p)`, and with `grad` its gradient with respect to `x`.
    pub fn cov_grad(&self, x: &[f64], p: &[f64], vp: &[f64], grad: bool) -> (f64, Vec<f64>) {
        let (n, d) = (self.n, self.d);
        let (k, kg) = self.cross(x);
        let s: f64 = (0..d).map(|t| (x[t] - p[t]) * (x[t] - p[t]) * self.inv_ls2[t]).sum();
        let (kxp, gxp) = kern(s);
        let c = kxp - dot(&k, vp);
        if !grad {
            return (c, Vec::new());
        }
        let mut dc: Vec<f64> = (0..d).map(|t| -gxp * (x[t] - p[t]) * self.inv_ls2[t]).collect();
        for j in 0..n {
            let xj = &self.x[j * d..(j + 1) * d];
            let a = vp[j] * kg[j];
            for t in 0..d {
                dc[t] += a * (x[t] - xj[t]) * self.inv_ls2[t];
            }
        }
        (c, dc)
    }

    /// The kernel between `x` and each training point, and `-2 dk/ds` there.
    fn cross(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        (0..self.n)
            .map(|j| {
                let xj = &self.x[j * d..(j + 1) * d];
                let s: f64 = (0..d).map(|t| (x[t] - xj[t]) * (x[t] - xj[t]) * self.inv_ls2[t]).sum();
                kern(s)
            })
            .unzip()
    }
}

/// L-BFGS (argmin, More-Thuente line search) on the negative log posterior.
fn minimize_unconstrained(problem: &Problem, start: Hyper, max_iters: u64) -> Option<(f64, Hyper)> {
    let solver =
        LBFGS::new(MoreThuenteLineSearch::new(), 7).with_tolerance_grad(1e-5).ok()?.with_tolerance_cost(1e-9).ok()?;
    let res =
        Executor::new(ArgminProblem(problem), solver).configure(|s| s.param(start).max_iters(max_iters)).run().ok()?;
    let state = res.state();
    let h = state.get_best_param()?.clone();
    let v = state.get_best_cost();
    v.is_finite().then_some((v, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, d: usize) -> Data {
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..d).map(|t| ((i * (t + 3) * 7919 + t * 104_729) % 1000) as f64 / 999.0).collect())
            .collect();
        let y = x.iter().map(|p| (3.0 * p[0]).sin() + p.iter().map(|v| v * v).sum::<f64>()).collect();
        Data { x, y, noise: Noise::Inferred }
    }

    #[test]
    fn the_gradient_of_the_log_posterior_matches_finite_differences() {
        for fixed in [false, true] {
            let data = toy(15, 3);
            let (m, s) = standardize(&data.y);
            let y: Vec<f64> = data.y.iter().map(|v| (v - m) / s).collect();
            let x: Vec<f64> = data.x.iter().flatten().copied().collect();
            let f = [0.01; 15];
            let p = Problem { d: 3, x: &x, y: &y, fixed: fixed.then_some(&f[..]), mean: None };
            let h: Vec<f64> = if fixed { vec![-0.7, 0.1, -1.2, 0.3] } else { vec![-0.7, 0.1, -1.2, -3.0, 0.3] };
            let (_, g) = p.eval(&h).unwrap();
            for i in 0..h.len() {
                let e = 1e-6;
                let (mut a, mut b) = (h.clone(), h.clone());
                a[i] += e;
                b[i] -= e;
                let fd = (p.eval(&a).unwrap().0 - p.eval(&b).unwrap().0) / (2.0 * e);
                assert!((fd - g[i]).abs() < 1e-4 * fd.abs().max(1.0), "fixed={fixed} h[{i}]: {fd} vs {}", g[i]);
            }
        }
    }

    #[test]
    fn the_posterior_gradient_matches_finite_differences() {
        let gp = Gp::fit(&toy(20, 2), &[Gp::default_hyper(2, true)], 50).unwrap();
        let x = [0.31, 0.77];
        let (_, _, dm, dv) = gp.predict_grad(&x);
        for t in 0..2 {
            let e = 1e-6;
            let (mut a, mut b) = (x, x);
            a[t] += e;
            b[t] -= e;
            let (ma, va) = gp.predict(&a);
            let (mb, vb) = gp.predict(&b);
            assert!(((ma - mb) / (2.0 * e) - dm[t]).abs() < 1e-5, "mean");
            assert!(((va - vb) / (2.0 * e) - dv[t]).abs() < 1e-5, "variance");
        }
    }

    #[test]
    fn the_posterior_covariance_and_its_gradient_are_right() {
        let gp = Gp::fit(&toy(20, 2), &[Gp::default_hyper(2, true)], 50).unwrap();
        let p = [0.6, 0.2];
        let vp = gp.solve_cross(&p);
        // At p itself the covariance is the variance.
        assert!((gp.cov_grad(&p, &p, &vp, false).0 - gp.predict(&p).1).abs() < 1e-9);
        let x = [0.31, 0.77];
        let (_, dc) = gp.cov_grad(&x, &p, &vp, true);
        for t in 0..2 {
            let e = 1e-6;
            let (mut a, mut b) = (x, x);
            a[t] += e;
            b[t] -= e;
            let fd = (gp.cov_grad(&a, &p, &vp, false).0 - gp.cov_grad(&b, &p, &vp, false).0) / (2.0 * e);
            assert!((fd - dc[t]).abs() < 1e-5, "{fd} vs {}", dc[t]);
        }
    }

    #[test]
    fn the_fit_interpolates_and_is_uncertain_far_away() {
        let data = toy(30, 2);
        let gp = Gp::fit(&data, &[Gp::default_hyper(2, true)], 100).unwrap();
        for (x, y) in data.x.iter().zip(&data.y) {
            let (m, v) = gp.predict(x);
            assert!((m * gp.scale + gp.shift - y).abs() < 0.05, "{m} vs {y}");
            assert!(v < 0.05);
        }
    }
}
