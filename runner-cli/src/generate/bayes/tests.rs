use super::*;
use crate::domain::{LinearConstraint, Objective, Parameter, Relation, Value};
use std::collections::HashSet;

fn float(name: &str, lo: f64, hi: f64) -> Parameter {
    Parameter {
        name: name.into(),
        domain: Domain::Float { lo, hi, log: false, step: None, digits: crate::domain::DEFAULT_DIGITS },
    }
}

fn branin(a: &Arm) -> f64 {
    let (x1, x2) = (a.get("x1").unwrap().as_f64().unwrap(), a.get("x2").unwrap().as_f64().unwrap());
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    (x2 - b * x1 * x1 + 5.0 / pi * x1 - 6.0).powi(2) + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * x1.cos() + 10.0
}

fn branin_space() -> SearchSpace {
    SearchSpace { parameters: vec![float("x1", -5.0, 10.0), float("x2", 0.0, 15.0)], constraints: vec![] }
}

fn minimize(metric: &str) -> Goal {
    Goal::single(Objective::metric(metric, Direction::Minimize))
}

/// A completed trial with these values (no SEM).
fn observed(enc: &Encoder, space: &SearchSpace, arm: &Arm, values: &BTreeMap<String, f64>) -> Observed {
    Observed {
        x: enc.encode(space, arm).unwrap(),
        values: values.iter().map(|(k, v)| (k.clone(), (*v, None))).collect(),
    }
}

/// Run `trials` sequential trials: `sobol` Sobol points, then Bayesian proposals.
fn run(
    space: &SearchSpace,
    goal: &Goal,
    constraints: &[OutcomeConstraint],
    seed: u64,
    sobol: u64,
    trials: u64,
    f: &dyn Fn(&Arm) -> BTreeMap<String, f64>,
) -> Vec<(Arm, BTreeMap<String, f64>)> {
    let enc = Encoder::new(space);
    let mut history = History::default();
    let mut out = Vec::new();
    let mut warm = BTreeMap::new();
    for i in 0..trials {
        let arm = if i < sobol {
            space.arm_from_unit(&super::super::sobol_point(i, space.dims(), seed))
        } else {
            let ctx = Context { space, encoder: &enc, goal, constraints, seed, draw: i - sobol, warm: &warm };
            let seen: HashSet<String> = out.iter().map(|(a, _): &(Arm, _)| a.key()).collect();
            let c = propose(&ctx, &history, &|k| seen.contains(k)).expect("a candidate");
            warm = c.hypers;
            c.arm
        };
        let values = f(&arm);
        history.completed.push(observed(&enc, space, &arm, &values));
        out.push((arm, values));
    }
    out
}

#[test]
fn the_encoding_round_trips_every_kind_of_parameter() {
    let space = SearchSpace {
        parameters: vec![
            float("a", -1.0, 1.0),
            Parameter {
                name: "lr".into(),
                domain: Domain::Float {
                    lo: 1e-5,
                    hi: 1e-1,
                    log: true,
                    step: None,
                    digits: crate::domain::DEFAULT_DIGITS,
                },
            },
            Parameter { name: "n".into(), domain: Domain::Int { lo: 1, hi: 8, log: false, step: None } },
            Parameter {
                name: "opt".into(),
                domain: Domain::Choice {
                    values: vec![Value::Str("adam".into()), Value::Str("sgd".into()), Value::Str("rms".into())],
                    ordered: false,
                },
            },
            Parameter { name: "e".into(), domain: Domain::Fixed { value: Value::Int(20) } },
            Parameter {
                name: "bs".into(),
                domain: Domain::Choice { values: vec![Value::Int(16), Value::Int(32), Value::Int(64)], ordered: true },
            },
        ],
        constraints: vec![],
    };
    let enc = Encoder::new(&space);
    assert_eq!(enc.width(), 1 + 1 + 1 + 3 + 1);
    for i in 0..200 {
        let arm = space.arm_from_unit(&super::super::sobol_point(i, space.dims(), 3));
        let x = enc.encode(&space, &arm).unwrap();
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(x[3..6].iter().sum::<f64>(), 1.0, "one-hot");
        assert_eq!(enc.decode(&space, &x), arm);
    }
}

#[test]
fn bayesian_optimization_beats_sobol_on_branin() {
    let space = branin_space();
    let obj = minimize("f");
    let f = |a: &Arm| BTreeMap::from([("f".to_string(), branin(a))]);
    for seed in 0..3 {
        let bo = run(&space, &obj, &[], seed, 6, 20, &f);
        let best = bo.iter().map(|r| r.1["f"]).fold(f64::INFINITY, f64::min);
        let sobol = run(&space, &obj, &[], seed, 20, 20, &f);
        let sobol_best = sobol.iter().map(|r| r.1["f"]).fold(f64::INFINITY, f64::min);
        assert!(best < 1.0 && best < sobol_best, "seed {seed}: bo {best}, sobol {sobol_best}");
        let keys: HashSet<String> = bo.iter().map(|r| r.0.key()).collect();
        assert_eq!(keys.len(), bo.len(), "a repeated arm");
    }
}

#[test]
fn the_same_history_and_seed_give_the_same_candidate() {
    let space = branin_space();
    let obj = minimize("f");
    let f = |a: &Arm| BTreeMap::from([("f".to_string(), branin(a))]);
    let a = run(&space, &obj, &[], 4, 5, 9, &f);
    let b = run(&space, &obj, &[], 4, 5, 9, &f);
    assert_eq!(a.iter().map(|r| r.0.key()).collect::<Vec<_>>(), b.iter().map(|r| r.0.key()).collect::<Vec<_>>());
    let c = run(&space, &obj, &[], 5, 5, 9, &f);
    assert_ne!(a[8].0, c[8].0);
}

#[test]
fn parameter_constraints_are_never_violated_and_outcome_constraints_are_learned() {
    // Minimize x + y subject to the outcome constraint c = (x - 0.7)^2 + (y - 0.7)^2 <= 0.05
    // and the parameter constraint x <= y: the optimum is on both boundaries.
    let space = SearchSpace {
        parameters: vec![float("x", 0.0, 1.0), float("y", 0.0, 1.0)],
        constraints: vec![LinearConstraint {
            terms: vec![("x".into(), 1.0), ("y".into(), -1.0)],
            bound: 0.0,
            text: "x <= y".into(),
        }],
    };
    let cons = [OutcomeConstraint { metric: "c".into(), relation: Relation::AtMost, bound: 0.05 }];
    let f = |a: &Arm| {
        let (x, y) = (a.get("x").unwrap().as_f64().unwrap(), a.get("y").unwrap().as_f64().unwrap());
        BTreeMap::from([("f".to_string(), x + y), ("c".to_string(), (x - 0.7).powi(2) + (y - 0.7).powi(2))])
    };
    // One seed's count moves by 2 or 3 with any change to the model; 12 seeds tell.
    let mut near = 0;
    for seed in 0..12 {
        let rows = run(&space, &minimize("f"), &cons, seed, 5, 20, &f);
        for (arm, _) in &rows[5..] {
            let (x, y) = (arm.get("x").unwrap().as_f64().unwrap(), arm.get("y").unwrap().as_f64().unwrap());
            assert!(x <= y, "{}", arm.key());
        }
        let best = rows.iter().filter(|r| r.1["c"] <= 0.05).map(|r| r.1["f"]).fold(f64::INFINITY, f64::min);
        // The feasible optimum is 1.4 - 2 * sqrt(0.025) ~ 1.084, on the boundary of the disc.
        assert!(best < 1.1, "seed {seed}: best feasible {best}");
        near += rows[10..].iter().filter(|r| r.1["c"] <= 0.06).count();
    }
    // Proposals hug the boundary of the feasible disc, on both sides of it (uniform points
    // would land there on about a fifth).
    assert!(near >= 75, "only {near} of the last 10 of 12 runs were near the feasible region");
}

#[test]
fn pending_trials_push_the_next_candidate_away() {
    let space = branin_space();
    let obj = minimize("f");
    let f = |a: &Arm| BTreeMap::from([("f".to_string(), branin(a))]);
    let rows = run(&space, &obj, &[], 2, 8, 8, &f);
    let enc = Encoder::new(&space);
    let mut history = History::default();
    for (arm, v) in &rows {
        history.completed.push(observed(&enc, &space, arm, v));
    }
    let warm = BTreeMap::new();
    let ctx = Context { space: &space, encoder: &enc, goal: &obj, constraints: &[], seed: 2, draw: 0, warm: &warm };
    let first = propose(&ctx, &history, &|_| false).unwrap().arm;
    history.pending.insert(100, enc.encode(&space, &first).unwrap());
    let second = propose(&ctx, &history, &|_| false).unwrap().arm;
    let (a, b) = (enc.encode(&space, &first).unwrap(), enc.encode(&space, &second).unwrap());
    let dist = a.iter().zip(&b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt();
    assert!(dist > 0.02, "the second candidate sits on the pending one: {dist}");
}

#[test]
fn maximization_and_unordered_choices() {
    let space = SearchSpace {
        parameters: vec![
            float("x", 0.0, 1.0),
            Parameter {
                name: "k".into(),
                domain: Domain::Choice {
                    values: vec![Value::Str("a".into()), Value::Str("b".into()), Value::Str("c".into())],
                    ordered: false,
                },
            },
        ],
        constraints: vec![],
    };
    let obj = Goal::single(Objective::metric("acc", Direction::Maximize));
    let f = |a: &Arm| {
        let x = a.get("x").unwrap().as_f64().unwrap();
        let bonus = if a.get("k") == Some(&Value::Str("b".into())) { 1.0 } else { 0.0 };
        BTreeMap::from([("acc".to_string(), bonus - (x - 0.3).powi(2))])
    };
    let rows = run(&space, &obj, &[], 3, 5, 14, &f);
    let best = rows.iter().map(|r| r.1["acc"]).fold(f64::NEG_INFINITY, f64::max);
    assert!(best > 0.99, "{best}");
}

#[test]
fn winsorizing_clips_only_the_bad_tail_and_never_makes_a_constraint_feasible() {
    let some = |v: &[f64]| v.iter().map(|v| Some((*v, Some(0.1)))).collect::<Vec<_>>();
    // 0..=10 and an outlier: numpy's "lower" q1 and "higher" q3 of the twelve values are 2
    // and 9, so the cutoff for large values is 9 + 1.5 * 7 = 19.5.
    let base: Vec<f64> = (0..=10).map(f64::from).collect();
    let mut y = some(&[base.clone(), vec![1e9]].concat());
    y.push(None);
    winsorize(&mut y, true, None);
    let got: Vec<Option<f64>> = y.iter().map(|v| v.map(|v| v.0)).collect();
    let want: Vec<Option<f64>> = base.iter().map(|v| Some(*v)).chain([Some(19.5), None]).collect();
    assert_eq!(got, want);
    assert!(y.iter().flatten().all(|v| v.1 == Some(0.1)), "the SEM is kept");
    // A tail of small values is bad (maximized): q1 = 2, q3 = 8 of -1e9, 0..=10: the cutoff
    // is 2 - 9 = -7; the good outlier (50) stays.
    let mut y = some(&[base.clone(), vec![-1e9, 50.0]].concat());
    winsorize(&mut y, false, None);
    assert_eq!(y[11].unwrap().0, -7.0);
    assert_eq!(y[12].unwrap().0, 50.0);
    // `at most 20`: the cutoff is measured from the bound, beyond the spread of the values
    // (q1 = 2), so a value above the bound stays above it: 20 + 1.5 * 18.
    let mut c = some(&[base.clone(), vec![1e9]].concat());
    winsorize(&mut c, true, Some(20.0));
    assert_eq!(c[11].unwrap().0, 47.0);
    // Too few values to tell an outlier: left alone.
    let mut few = some(&[0.0, 1.0, 2.0, 3.0, 1e9]);
    winsorize(&mut few, true, None);
    assert_eq!(few[4].unwrap().0, 1e9);
}

#[test]
fn one_diverged_trial_does_not_blind_the_model() {
    // Branin with one run that blew up: the candidates still find the valley. Over seeds,
    // since one seed's 8 proposals tell little (without the clipping the median is 5.0).
    let space = branin_space();
    let obj = minimize("f");
    let mut bests: Vec<f64> = (0..20)
        .map(|seed| {
            let blown = space.arm_from_unit(&super::super::sobol_point(3, 2, seed));
            let f = |a: &Arm| BTreeMap::from([("f".to_string(), if *a == blown { 1e12 } else { branin(a) })]);
            let rows = run(&space, &obj, &[], seed, 12, 20, &f);
            assert_eq!(rows[3].1["f"], 1e12);
            rows[12..].iter().map(|r| r.1["f"]).fold(f64::INFINITY, f64::min)
        })
        .collect();
    bests.sort_by(f64::total_cmp);
    let median = (bests[9] + bests[10]) / 2.0;
    assert!(median < 1.0, "median best {median} after 8 proposals: {bests:?}");
}
