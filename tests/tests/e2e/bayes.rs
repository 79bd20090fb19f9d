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
