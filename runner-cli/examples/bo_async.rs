//! Asynchronous parallel Bayesian optimization, simulated in-process and deterministically:
//! `q` trials run at once and the oldest completes first, so each proposal sees `q - 1`
//! pending trials, as in a real `optx run` with `parallelism = q` (where which trial ends
//! first varies from run to run, which makes those figures noisy). The sequence is optx's:
//! the center, Sobol up to the initial trials (5 by default), then the model. Prints the
//! best value per seed and the quartiles.
//!
//! Usage: bo_async [hartmann6|branin] [budget] [q] [seeds] [async|batch] [initial trials]
//! (default: hartmann6 30 3 20 async 5; `batch`: all q complete before the next q
//! are proposed; the initial trials count the center point, as `initial_trials` does)
//!
//! Environment: `BO_FIRST_SEED` (0) to start the seeds elsewhere; `BO_NOISE_SD` (0) adds
//! Gaussian noise of that standard deviation to what the model sees (the best is still
//! judged on noise-free values), `BO_REPORT_SEM` set reports it as each value's SEM.
//! `BO_DURATION_SPREAD` (say 0.5) times the run instead: trial i takes a duration drawn
//! from U[1 - spread, 1 + spread] (the same per seed in both modes), the trial that ends
//! first completes first, and both modes get the time that synchronous batches take for
//! the budget (so asynchronous runs complete more trials in it).

use std::collections::{BTreeMap, HashSet};

use optx::domain::{Arm, Direction, Domain, Goal, Objective, Parameter, SearchSpace};
use optx::generate::bayes::{propose, Context, Encoder, History, Observed};
use optx::generate::sobol_point;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let first = env("BO_FIRST_SEED").unwrap_or(0.0) as u64;
    let noise_sd = env("BO_NOISE_SD").unwrap_or(0.0);
    let report_sem = std::env::var_os("BO_REPORT_SEM").is_some();
    // Timed: trial i runs for a duration drawn from U[1 - spread, 1 + spread], and both
    // modes get the time that synchronous batches need for the budget on that seed.
    let spread = env("BO_DURATION_SPREAD");
    if spread.is_some_and(|s| !(s > 0.0 && s < 1.0)) {
        eprintln!("BO_DURATION_SPREAD must be in (0, 1)");
        std::process::exit(2);
    }
    let mut counts = Vec::new();
    for seed in first..first + seeds {
        let mut history = History::default();
        // (index, arm, when it ends)
        let mut running: Vec<(u64, Arm, f64)> = Vec::new();
        let mut seen = HashSet::new();
        let mut warm = BTreeMap::new();
        let (mut draw, mut best) = (0, f64::INFINITY);
        let mut made = 0;
        let mut noise = ChaCha8Rng::seed_from_u64(seed ^ 0x0053_EED0_F401);
        let mut timing = ChaCha8Rng::seed_from_u64(seed ^ 0x0D0_4A71);
        let most = if spread.is_some() { 4 * budget } else { budget };
        let duration: Vec<f64> =
            (0..most).map(|_| spread.map_or(1.0, |s| 1.0 + s * (2.0 * timing.random::<f64>() - 1.0))).collect();
        // The time synchronous batches take for the budget.
        let horizon = spread
            .map(|_| duration[..budget as usize].chunks(q).map(|c| c.iter().copied().fold(0.0, f64::max)).sum::<f64>());
        let (mut now, mut done) = (0.0, 0);
        // No trial starts once the time is up; batches start no more than the budget either.
        let stop = |now: f64, made: u64| match horizon {
            Some(h) => now >= h - 1e-9 || made >= most || (batch && made >= budget),
            None => made >= budget,
        };
        loop {
            let no_more = stop(now, made);
            let complete = if batch {
                usize::from(running.len() == q || no_more) * running.len()
            } else {
                usize::from(running.len() == q || (no_more && !running.is_empty()))
            };
            for _ in 0..complete {
                // The running trial that ends first completes (the oldest when they take
                // equal time).
                let next = (0..running.len())
                    .min_by(|a, b| running[*a].2.total_cmp(&running[*b].2).then(running[*a].0.cmp(&running[*b].0)))
                    .expect("a running trial");
                let (index, arm, end) = running.remove(next);
                now = f64::max(now, end);
                let x = enc.encode(&space, &arm).expect("encodable");
                history.pending.remove(&index);
                if horizon.is_some_and(|h| end > h + 1e-9) {
                    // Ends after the time is up: it does not count.
                    continue;
                }
                let y = f(&x);
                best = best.min(y);
                done += 1;
                // The model sees a noisy value (and its SEM if reported); the best is judged on
                // the noise-free one.
                let (y, sem) = if noise_sd > 0.0 {
                    let (u1, u2): (f64, f64) = (noise.random(), noise.random());
                    let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (y + noise_sd * z, report_sem.then_some(noise_sd))
                } else {
                    (y, None)
                };
                history.completed.push(Observed { x, values: BTreeMap::from([("f".to_string(), (y, sem))]) });
            }
            let no_more = stop(now, made);
            if no_more {
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
            running.push((made, arm, now + duration[made as usize]));
            made += 1;
        }
        if horizon.is_some_and(|h| now < h - 1e-9) {
            eprintln!("seed {seed}: stopped at {most} trials before the time was up");
        }
        bests.push(best);
        counts.push(done as f64);
    }
    let (q1, med, q3) = quartiles(&bests);
    let how = match (batch, spread) {
        (true, None) => "synchronous batches".to_string(),
        (false, None) => "the oldest completes first".to_string(),
        (true, Some(s)) => format!("synchronous batches, durations U[{:.2}, {:.2}]", 1.0 - s, 1.0 + s),
        (false, Some(s)) => {
            format!("asynchronous, durations U[{:.2}, {:.2}], in the time batches take for {budget}", 1.0 - s, 1.0 + s)
        }
    };
    println!(
        "{problem}, budget {budget}, {q} in parallel ({how}), {initial} initial trials, seeds {first}-{}, in-process:",
        first + seeds - 1
    );
    println!("  q1 {q1:.3}  median {med:.3}  q3 {q3:.3}");
    if spread.is_some() {
        println!("  trials completed in the time: mean {:.1}", counts.iter().sum::<f64>() / counts.len() as f64);
    }
    println!("  per seed: {}", bests.iter().map(|b| format!("{b:.3}")).collect::<Vec<_>>().join(" "));
}
