//! Bayesian optimization through `optx run`: the generation sequence, its quality against
//! Sobol on Branin, outcome constraints, and a resume that continues the same sequence.

use crate::common::*;

const PARAMS: &str =
    "x1 = { type = \"float\", bounds = [-5.0, 10.0] }\nx2 = { type = \"float\", bounds = [0.0, 15.0] }";

/// Branin (and `c = x1 + x2`) through a command-runner script.
const SCRIPT: &str = "import math, sys\n\
x1, x2 = float(sys.argv[1]), float(sys.argv[2])\n\
b = (x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10\n\
print(f\"f={b!r} c={x1 + x2!r}\")\n";

fn branin(name: &str, trials: u64, method: &str, extra: &str) -> Exp {
    let runner = "command = [\"python3\", \"branin.py\", \"{x1}\", \"{x2}\"]";
    let orchestration = format!("max_trials = {trials}\ninitial_seconds_between_polls = 0");
    let text = toml(name, PARAMS, runner, &orchestration, &format!("[generation]\nmethod = \"{method}\"\n\n{extra}"));
    let e = Exp::new(name, &text);
    e.file("branin.py", SCRIPT);
    e
}

fn best(trials: &[serde_json::Value], feasible: impl Fn(&serde_json::Value) -> bool) -> f64 {
    trials.iter().filter(|t| feasible(t)).filter_map(|t| metric(t, "f")).fold(f64::INFINITY, f64::min)
}

#[test]
fn auto_runs_center_then_sobol_then_bayesian_and_beats_sobol() {
    let e = branin("bo", 20, "auto", "");
    let out = e.run_ok(&["validate", "experiment.toml"]);
    assert!(text(&out).contains("then Bayesian optimization"), "{}", text(&out));
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let trials = e.trials();
    let gens: Vec<&str> = trials.iter().map(|t| t["generation"].as_str().unwrap()).collect();
    // Two dimensions: max(5, 2 * 2) = 5 initial trials.
    assert_eq!(gens[..5], ["center", "sobol", "sobol", "sobol", "sobol"]);
    assert!(gens[5..].iter().all(|g| *g == "bayesian"), "{gens:?}");
    let bo = best(&trials, |_| true);

    let s = branin("sobol", 20, "sobol", "");
    s.run_ok(&["run", "experiment.toml", "--quiet"]);
    let sobol = best(&s.trials(), |_| true);
    // The optimum is 0.397887.
    assert!(bo < 0.6 && bo < sobol, "bayesian {bo}, sobol {sobol}");
    let keys: std::collections::HashSet<String> = trials.iter().map(|t| t["parameters"].to_string()).collect();
    assert_eq!(keys.len(), trials.len(), "an arm ran twice");
}

#[test]
fn outcome_and_parameter_constraints_shape_the_bayesian_proposals() {
    // Branin's three minima have x1 + x2 = 9.9, 5.9 and 12.9; c <= 7 leaves only (pi, 2.275),
    // and x1 >= 0 is a parameter constraint.
    let extra = "[constraints]\noutcomes = [\"c <= 7.0\"]\nparameters = [\"-1 * x1 <= 0\"]";
    let e = branin("cons", 20, "bayesian", extra);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let trials = e.trials();
    for t in &trials {
        assert!(t["parameters"]["x1"].as_f64().unwrap() >= 0.0, "{t}");
    }
    let feasible = |t: &serde_json::Value| metric(t, "c").is_some_and(|c| c <= 7.0);
    let b = best(&trials, feasible);
    assert!(b < 0.8, "best feasible {b}");
    let out = e.run_ok(&["best", "experiment.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["metrics"]["c"]["mean"].as_f64().unwrap() <= 7.0, "{v}");
}

#[test]
fn a_resumed_run_continues_the_same_bayesian_sequence() {
    let whole = branin("whole", 14, "auto", "");
    whole.run_ok(&["run", "experiment.toml", "--quiet"]);
    let parts = branin("parts", 9, "auto", "");
    parts.run_ok(&["run", "experiment.toml", "--quiet"]);
    parts.run_ok(&["resume", "experiment.toml", "--max-trials", "14", "--quiet"]);
    let arms = |e: &Exp| e.trials().iter().map(|t| t["parameters"].to_string()).collect::<Vec<_>>();
    let (a, b) = (arms(&whole), arms(&parts));
    assert_eq!(a.len(), 14);
    assert_eq!(a, b, "the resumed run proposed other arms");
}

/// Branin-Currin, both minimized over the unit square (BoTorch's multi-objective test).
const BRANIN_CURRIN: &str = "import math, sys\n\
u, v = float(sys.argv[1]), max(float(sys.argv[2]), 1e-9)\n\
x1, x2 = 15 * u - 5, 15 * v\n\
b = (x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10\n\
c = (1 - math.exp(-1 / (2 * v))) * (2300 * u ** 3 + 1900 * u ** 2 + 2092 * u + 60) / (100 * u ** 3 + 500 * u ** 2 + 4 * u + 20)\n\
print(f\"branin={b!r} currin={c!r}\")\n";

/// The reference point: both thresholds.
const REFERENCE: [f64; 2] = [18.0, 6.0];

fn branin_currin(name: &str, method: &str) -> Exp {
    let params = "u = { type = \"float\", bounds = [0.0, 1.0] }\nv = { type = \"float\", bounds = [0.0, 1.0] }";
    let runner = "command = [\"python3\", \"bc.py\", \"{u}\", \"{v}\"]";
    let orchestration = "max_trials = 24\ninitial_seconds_between_polls = 0";
    let text = toml(name, params, runner, orchestration, &format!("[generation]\nmethod = \"{method}\"\n")).replace(
        "minimize = \"f\"",
        &format!(
            "minimize = [\"branin\", \"currin\"]\nthresholds = [\"branin <= {}\", \"currin <= {}\"]",
            REFERENCE[0], REFERENCE[1]
        ),
    );
    let e = Exp::new(name, &text);
    e.file("bc.py", BRANIN_CURRIN);
    e
}

/// The area dominated by `points` (both minimized) and bounded by the reference point.
fn hypervolume(points: &[[f64; 2]]) -> f64 {
    let mut inside: Vec<[f64; 2]> =
        points.iter().copied().filter(|p| p[0] <= REFERENCE[0] && p[1] <= REFERENCE[1]).collect();
    inside.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut area, mut roof) = (0.0, REFERENCE[1]);
    for p in inside {
        if p[1] < roof {
            area += (REFERENCE[0] - p[0]) * (roof - p[1]);
            roof = p[1];
        }
    }
    area
}

fn objective_pairs(trials: &[serde_json::Value]) -> Vec<(u64, [f64; 2])> {
    trials.iter().filter_map(|t| Some((t["index"].as_u64()?, [metric(t, "branin")?, metric(t, "currin")?]))).collect()
}

#[test]
fn several_objectives_give_a_pareto_front_that_beats_sobol() {
    let e = branin_currin("mo", "auto");
    let out = e.run_ok(&["validate", "experiment.toml"]);
    assert!(text(&out).contains("ParEGO"), "{}", text(&out));
    let run = e.run_ok(&["run", "experiment.toml"]);
    let log = text(&run);
    assert!(log.contains("branin = ") && log.contains(", currin = "), "{log}");
    assert!(log.contains("* on the Pareto front") && log.contains("Pareto front: "), "{log}");
    let trials = e.trials();
    assert!(trials[6..].iter().all(|t| t["generation"] == "bayesian"), "{trials:?}");
    let pairs = objective_pairs(&trials);
    assert_eq!(pairs.len(), 24);

    // `optx best` lists exactly the undominated trials within the thresholds.
    let dominated = |p: &[f64; 2]| pairs.iter().any(|(_, q)| q[0] <= p[0] && q[1] <= p[1] && q != p);
    let mut expected: Vec<u64> = pairs
        .iter()
        .filter(|(_, p)| !dominated(p) && p[0] <= REFERENCE[0] && p[1] <= REFERENCE[1])
        .map(|(i, _)| *i)
        .collect();
    expected.sort();
    let out = e.run_ok(&["best", "experiment.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let front: Vec<u64> = v["pareto_front"].as_array().unwrap().iter().map(|p| p["index"].as_u64().unwrap()).collect();
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(front, expected);
    assert_eq!(v["objectives"][1]["name"], "currin");
    let table = text(&e.run_ok(&["best", "experiment.toml"]));
    assert!(
        table.starts_with(&format!(
            "Pareto front (minimize branin, currin; thresholds branin <= 18, currin <= 6): {} trials",
            front.len()
        )),
        "{table}"
    );

    let s = branin_currin("mo_sobol", "sobol");
    s.run_ok(&["run", "experiment.toml", "--quiet"]);
    let hv = |pairs: Vec<(u64, [f64; 2])>| hypervolume(&pairs.into_iter().map(|p| p.1).collect::<Vec<_>>());
    let (bo, sobol) = (hv(pairs), hv(objective_pairs(&s.trials())));
    // The largest hypervolume is about 59.4.
    assert!(bo > sobol && bo > 50.0, "hypervolume: bayesian {bo}, sobol {sobol}");
}

#[test]
fn a_weighted_sum_of_metrics_is_the_objective() {
    let e = branin("sum", 16, "auto", "");
    let text_ = std::fs::read_to_string(e.path().join("experiment.toml")).unwrap();
    std::fs::write(e.path().join("experiment.toml"), text_.replace("minimize = \"f\"", "minimize = \"f + 0.5*c\""))
        .unwrap();
    let run = text(&e.run_ok(&["run", "experiment.toml"]));
    assert!(run.contains("completed  f + 0.5*c = "), "{run}");
    let trials = e.trials();
    let value = |t: &serde_json::Value| metric(t, "f").unwrap() + 0.5 * metric(t, "c").unwrap();
    let (i, min) = trials.iter().map(|t| (t["index"].as_u64().unwrap(), value(t))).fold((0, f64::INFINITY), |b, x| {
        if x.1 < b.1 {
            x
        } else {
            b
        }
    });
    let v: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["best", "experiment.toml", "--json"]).stdout).unwrap();
    assert_eq!(v["index"].as_u64(), Some(i), "{v}");
    assert!((v["objective"]["value"].as_f64().unwrap() - min).abs() < 1e-9, "{v}");
    assert_eq!(v["objective"]["metric"], "f + 0.5*c");
    let table = text(&e.run_ok(&["trials", "experiment.toml"]));
    assert!(table.lines().next().unwrap().contains("f + 0.5*c") || table.contains("f + 0.5*c"), "{table}");
}
