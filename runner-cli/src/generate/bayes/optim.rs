//! Box-constrained local minimization: our one entry to the L-BFGS-B we depend on, so
//! that the rest of the model code does not know which crate provides it.

use basin::{BoxBounds, ConstraintSet, Constraints, CostFunction, Executor, FirstOrderState, Gradient, Lbfgsb};

/// A smooth function to minimize: value and gradient at once.
pub trait Objective {
    fn value_grad(&self, x: &[f64]) -> (f64, Vec<f64>);
}

struct Boxed<'a, F: Objective> {
    f: &'a F,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Points the solver asked for outside the box (clamped before `f` sees them).
    strays: &'a std::cell::Cell<u64>,
}

impl<F: Objective> Boxed<'_, F> {
    /// Every point handed to `f` is inside the box: a solver that strays is clamped back
    /// (the test below checks that the clamp never has to act).
    fn at(&self, x: &[f64]) -> Vec<f64> {
        if x.iter().zip(self.lo.iter().zip(&self.hi)).any(|(v, (l, h))| !(v >= l && v <= h)) {
            self.strays.set(self.strays.get() + 1);
        }
        clamp(x, &self.lo, &self.hi)
    }
}

impl<F: Objective> Constraints for Boxed<'_, F> {
    type Set = ConstraintSet<BoxBounds<Vec<f64>>>;
    fn constraints(&self) -> <Self::Set as basin::ConstraintDescription>::Borrowed<'_> {
        ConstraintSet::new().with_bounds(BoxBounds::new(Some(&self.lo), Some(&self.hi)))
    }
}

impl<F: Objective> CostFunction for Boxed<'_, F> {
    type Param = Vec<f64>;
    type Output = f64;
    type Error = std::convert::Infallible;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, Self::Error> {
        Ok(finite(self.f.value_grad(&self.at(x)).0))
    }
}

impl<F: Objective> Gradient for Boxed<'_, F> {
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Self::Error> {
        Ok(self.cost_and_gradient(x)?.1)
    }
    fn cost_and_gradient(&self, x: &Vec<f64>) -> Result<(f64, Vec<f64>), Self::Error> {
        let (v, g) = self.f.value_grad(&self.at(x));
        Ok((finite(v), g.into_iter().map(|g| if g.is_finite() { g } else { 0.0 }).collect()))
    }
}

fn clamp(x: &[f64], lo: &[f64], hi: &[f64]) -> Vec<f64> {
    x.iter().zip(lo.iter().zip(hi)).map(|(v, (l, h))| v.clamp(*l, *h)).collect()
}

fn finite(v: f64) -> f64 {
    if v.is_nan() {
        f64::MAX
    } else {
        v.clamp(-f64::MAX, f64::MAX)
    }
}

/// Minimize `f` over the box `[lo, hi]` from `x0` with L-BFGS-B. Returns the best point
/// found (inside the box) and its value; `x0` itself when no step improves on it.
pub fn minimize_box<F: Objective>(f: &F, x0: &[f64], lo: &[f64], hi: &[f64], max_iters: u64) -> (Vec<f64>, f64) {
    let (x, v, _) = minimize_box_counted(f, x0, lo, hi, max_iters);
    (x, v)
}

/// [`minimize_box`], also saying how many points the solver asked for outside the box.
fn minimize_box_counted<F: Objective>(
    f: &F,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    max_iters: u64,
) -> (Vec<f64>, f64, u64) {
    let start = clamp(x0, lo, hi);
    let strays = std::cell::Cell::new(0);
    let problem = Boxed { f, lo: lo.to_vec(), hi: hi.to_vec(), strays: &strays };
    let v0 = finite(f.value_grad(&start).0);
    let solver = Lbfgsb::new().with_m_capacity(10).with_absolute_projected_gradient_tolerance(1e-7);
    let run = Executor::new(problem, solver, FirstOrderState::new(start.clone())).max_iter(max_iters).run();
    let (x, v) = match &run {
        Ok(r) if r.cost() < v0 => {
            let x = clamp(r.param(), lo, hi);
            let v = finite(f.value_grad(&x).0);
            if v <= v0 {
                (x, v)
            } else {
                (start, v0)
            }
        }
        _ => (start, v0),
    };
    (x, v, strays.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A function whose unconstrained minimum lies outside the box.
    struct Outside {
        calls: Cell<u64>,
    }

    impl Objective for Outside {
        fn value_grad(&self, x: &[f64]) -> (f64, Vec<f64>) {
            self.calls.set(self.calls.get() + 1);
            let c = [1.7, -0.4, 0.5];
            let v = x.iter().zip(c).map(|(a, b)| (a - b) * (a - b) * (1.0 + a * a)).sum();
            let g = x.iter().zip(c).map(|(a, b)| 2.0 * (a - b) * (1.0 + a * a) + (a - b) * (a - b) * 2.0 * a).collect();
            (v, g)
        }
    }

    #[test]
    fn no_evaluated_point_leaves_the_box_and_the_optimum_is_on_its_face() {
        let f = Outside { calls: Cell::new(0) };
        for x0 in [[0.2, 0.9, 0.1], [1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.999, 0.001, 0.3]] {
            let (x, _, strays) = minimize_box_counted(&f, &x0, &[0.0; 3], &[1.0; 3], 100);
            assert!((x[0] - 1.0).abs() < 1e-6 && x[1].abs() < 1e-6 && (x[2] - 0.5).abs() < 1e-4, "{x:?}");
            assert_eq!(strays, 0, "the solver asked for points outside the box from {x0:?}");
        }
        assert!(f.calls.get() > 8);
    }
}
