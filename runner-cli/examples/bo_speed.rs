//! Time to propose one Bayesian candidate with n completed observations of Hartmann6 in six
//! dimensions (Sobol points), on one thread: the model fits, the acquisition is maximized.
//!
//! - cold: the first proposal of a run resumed with n observations (fits from the prior);
//! - warm: a proposal inside a run, whose fits start from the previous proposal's.
//!
//! Usage: bo_speed [n ...]   (bench/bo.py runs it; default n = 10 50 100 200 500 1000 3000)

use std::collections::BTreeMap;
use std::time::Instant;

use optx::domain::{Arm, Direction, Domain, Goal, Objective, Parameter, SearchSpace};
use optx::generate::bayes::{propose, Context, Encoder, History, Observed};
use optx::generate::sobol_point;

fn hartmann6(x: &[f64]) -> f64 {
    optx_hartmann6::hartmann6(&[x[0], x[1], x[2], x[3], x[4], x[5]])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![10, 50, 100, 200, 500, 1000, 3000] } else { args };
    let space = SearchSpace {
        parameters: (1..=6)
            .map(|i| Parameter {
                name: format!("x{i}"),
                domain: Domain::Float {
                    lo: 0.0,
                    hi: 1.0,
                    log: false,
                    step: None,
                    digits: optx::domain::DEFAULT_DIGITS,
                },
            })
            .collect(),
        constraints: vec![],
    };
    let goal = Goal::single(Objective::metric("hartmann6", Direction::Minimize));
    let enc = Encoder::new(&space);
    let observed = |arm: &Arm| {
        let x = enc.encode(&space, arm).expect("encodable");
        let y = hartmann6(&x);
        Observed { x, values: BTreeMap::from([("hartmann6".to_string(), (y, None))]) }
    };
    println!("time to propose one candidate, 6 dimensions, one thread (median of repeats):");
    println!("{:>6}  {:>10}  {:>10}  {:>7}", "n", "cold", "warm", "repeats");
    for n in sizes {
        let mut history = History::default();
        for i in 0..n as u64 {
            let arm: Arm = space.arm_from_unit(&sobol_point(i, 6, 1));
            history.completed.push(observed(&arm));
        }
        let repeats = if n <= 200 {
            7
        } else if n <= 1000 {
            3
        } else {
            1
        };
        let none = BTreeMap::new();
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for r in 0..repeats {
            let ctx =
                Context { space: &space, encoder: &enc, goal: &goal, constraints: &[], seed: r, draw: 0, warm: &none };
            let t = Instant::now();
            let c = propose(&ctx, &history, &|_| false).expect("a candidate");
            cold.push(t.elapsed().as_secs_f64());
            // The next proposal of the same run: one more observation, warm fits.
            let mut h2 = history.clone();
            h2.completed.push(observed(&c.arm));
            let ctx = Context { draw: 1, warm: &c.hypers, ..ctx };
            let t = Instant::now();
            propose(&ctx, &h2, &|_| false).expect("a candidate");
            warm.push(t.elapsed().as_secs_f64());
        }
        let fmt = |s: f64| if s < 1.0 { format!("{:.1} ms", s * 1e3) } else { format!("{s:.2} s") };
        println!("{n:>6}  {:>10}  {:>10}  {repeats:>7}", fmt(median(cold)), fmt(median(warm)));
    }
}
