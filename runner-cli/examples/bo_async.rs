//! Asynchronous parallel Bayesian optimization, simulated in-process and deterministically:
//! `q` trials run at once and the oldest completes first, so each proposal sees `q - 1`
//! pending trials, as in a real `optx run` with `parallelism = q` (where which trial ends
//! first varies from run to run, which makes those figures noisy). The sequence is optx's:
//! the center, Sobol up to max(5, 2 d) trials, then the model. Prints the best value per
//! seed and the quartiles.
//!
//! Usage: bo_async [hartmann6|branin] [budget] [q] [seeds] [async|batch] [initial trials]
//! (default: hartmann6 30 3 20 async 5; `batch`: all q complete before the next q
//! are proposed; the initial trials count the center point, as `initial_trials` does)

use std::collections::{BTreeMap, HashSet, VecDeque};

use optx::domain::{Arm, Direction, Domain, Goal, Objective, Parameter, SearchSpace};
use optx::generate::bayes::{propose, Context, Encoder, History, Observed};
use optx::generate::sobol_point;

fn branin(x: &[f64]) -> f64 {
    let (x1, x2) = (15.0 * x[0] - 5.0, 15.0 * x[1]);
    let pi = std::f64::consts::PI;
    (x2 - 5.1 / (4.0 * pi * pi) * x1 * x1 + 5.0 / pi * x1 - 6.0).powi(2)
        + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * x1.cos()
        + 10.0
}

fn hartmann6(x: &[f64]) -> f64 {
    optx_hartmann6::hartmann6(&[x[0], x[1], x[2], x[3], x[4], x[5]])
}

fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // The inclusive method, as Python's statistics.quantiles(method="inclusive").
    let at = |p: f64| {
        let h = p * (s.len() - 1) as f64;
        let (i, f) = (h.floor() as usize, h - h.floor());
        s[i] + f * (s[(i + 1).min(s.len() - 1)] - s[i])
    };
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let problem = args.first().map_or("hartmann6", String::as_str);
    let budget: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let q: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let seeds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20);
    // `batch`: all q complete together before the next q are proposed.
    let batch = args.get(4).is_some_and(|a| a == "batch");
    let initial: Option<u64> = args.get(5).and_then(|a| a.parse().ok());
    let (dims, f): (usize, fn(&[f64]) -> f64) = match problem {
        "branin" => (2, branin),
        _ => (6, hartmann6),
    };
    let space = SearchSpace {
        parameters: (1..=dims)
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
    let goal = Goal::single(Objective::metric("f", Direction::Minimize));
    let enc = Encoder::new(&space);
    let initial = initial.unwrap_or(optx::domain::DEFAULT_INITIAL_TRIALS);
    let mut bests = Vec::new();
    for seed in 0..seeds {
        let mut history = History::default();
        let mut running: VecDeque<(u64, Arm)> = VecDeque::new();
        let mut seen = HashSet::new();
        let mut warm = BTreeMap::new();
        let (mut draw, mut best) = (0, f64::INFINITY);
        let mut made = 0;
        loop {
            let complete = if batch {
                usize::from(running.len() == q || made >= budget) * running.len()
            } else {
                usize::from(running.len() == q || (made >= budget && !running.is_empty()))
            };
            for _ in 0..complete {
                // The oldest running trial completes.
                let (index, arm) = running.pop_front().expect("a running trial");
                let x = enc.encode(&space, &arm).expect("encodable");
                history.pending.remove(&index);
                let y = f(&x);
                best = best.min(y);
                history.completed.push(Observed { x, values: BTreeMap::from([("f".to_string(), (y, None))]) });
            }
            if made >= budget {
                if running.is_empty() {
                    break;
                }
                continue;
            }
            let arm = if made == 0 {
                space.center()
            } else if made < initial || history.completed.len() < 2 {
                space.arm_from_unit(&sobol_point(made - 1, dims, seed))
            } else {
                let ctx =
                    Context { space: &space, encoder: &enc, goal: &goal, constraints: &[], seed, draw, warm: &warm };
                let c = propose(&ctx, &history, &|k| seen.contains(k)).expect("a candidate");
                draw += 1;
                warm = c.hypers;
                c.arm
            };
            seen.insert(arm.key());
            history.pending.insert(made, enc.encode(&space, &arm).expect("encodable"));
            running.push_back((made, arm));
            made += 1;
        }
        bests.push(best);
    }
    let (q1, med, q3) = quartiles(&bests);
    let how = if batch { "synchronous batches" } else { "the oldest completes first" };
    println!(
        "{problem}, budget {budget}, {q} in parallel ({how}), {initial} initial trials, seeds 0-{}, in-process:",
        seeds - 1
    );
    println!("  q1 {q1:.3}  median {med:.3}  q3 {q3:.3}");
    println!("  per seed: {}", bests.iter().map(|b| format!("{b:.3}")).collect::<Vec<_>>().join(" "));
}
