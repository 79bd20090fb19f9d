//! Runs to completion: parameter types, placeholders, constraints, the output protocol.

use crate::common::*;

const EVERY_TYPE: &str = r#"x1 = { type = "float", bounds = [0.0, 1.0] }
lr = { type = "float", bounds = [1e-5, 1e-1], scaling = "log" }
layers = { type = "int", bounds = [1, 8] }
width = { type = "int", bounds = [16, 1024], scaling = "log" }
dropout = { type = "float", bounds = [0.0, 0.5], step = 0.05 }
blocks = { type = "int", bounds = [2, 10], step = 2 }
optimizer = { type = "choice", values = ["adam", "sgd", "rms prop"] }
batch_size = { type = "choice", values = [16, 32, 64, 128], ordered = true }
flag = { type = "choice", values = [true, false] }
epochs = { type = "fixed", value = 20 }"#;

#[test]
fn every_parameter_type_reaches_the_trial_as_typed_and_in_bounds() {
    let runner = r#"command = ["sh", "-c", "printf '%s' \"$OPTX_PARAMS\" > params_env.json; printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s' '{x1}' '{lr}' '{layers}' '{width}' '{dropout}' '{blocks}' '{optimizer}' '{batch_size}' '{flag}' '{epochs}' > args.txt; echo \"$OPTX_PARAM_DROPOUT $OPTX_TRIAL_INDEX $OPTX_SLOT\" > env.txt; echo f={x1}"]
workdir = "{trial_dir}""#;
    let e = Exp::new("types", &toml("types", EVERY_TYPE, runner, "max_trials = 25\nparallelism = 2", ""));
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 25);
    let mut seen_opts = std::collections::HashSet::new();
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        let p = &t["parameters"];
        let x1 = p["x1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x1));
        let lr = p["lr"].as_f64().unwrap();
        assert!((1e-5..=1e-1).contains(&lr), "lr {lr}");
        let layers = p["layers"].as_i64().expect("layers is an integer");
        assert!((1..=8).contains(&layers));
        let width = p["width"].as_i64().expect("width is an integer");
        assert!((16..=1024).contains(&width));
        let dropout = p["dropout"].as_f64().unwrap();
        let k = dropout / 0.05;
        assert!((k - k.round()).abs() < 1e-9 && (0.0..=0.5).contains(&dropout), "dropout {dropout}");
        assert_eq!(p["blocks"].as_i64().unwrap() % 2, 0);
        seen_opts.insert(p["optimizer"].as_str().unwrap().to_string());
        assert!([16, 32, 64, 128].contains(&p["batch_size"].as_i64().unwrap()));
        assert!(p["flag"].is_boolean());
        assert_eq!(p["epochs"], 20);
        // The trial got the same values, formatted once, as placeholders and environment.
        let i = t["index"].as_u64().unwrap();
        let dir = e.trial_dir(i);
        let env_params: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("params_env.json")).unwrap()).unwrap();
        assert_eq!(&env_params, p);
        let args = std::fs::read_to_string(dir.join("args.txt")).unwrap();
        let fields: Vec<&str> = args.split('|').collect();
        assert_eq!(fields[4].parse::<f64>().unwrap(), dropout);
        assert!(!fields[4].contains("0000000"), "a step value is printed round: {}", fields[4]);
        assert_eq!(fields[6], p["optimizer"].as_str().unwrap());
        assert_eq!(fields[9], "20");
        let env = std::fs::read_to_string(dir.join("env.txt")).unwrap();
        let env: Vec<&str> = env.split_whitespace().collect();
        assert_eq!(env[0], fields[4]);
        assert_eq!(env[1], i.to_string());
        assert!(env[2] == "0" || env[2] == "1", "slot {}", env[2]);
        assert_eq!(metric(t, "f"), Some(x1));
    }
    assert_eq!(seen_opts.len(), 3, "every choice value was tried");
    // No arm twice.
    let mut keys: Vec<String> = trials.iter().map(|t| t["parameters"].to_string()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25);
    // The center point comes first.
    assert_eq!(trials[0]["generation"], "center");
    assert_eq!(trials[0]["parameters"]["optimizer"], "adam");
}

#[test]
fn parameter_constraints_are_never_violated() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }
y = { type = "float", bounds = [0.0, 1.0] }
n = { type = "int", bounds = [0, 10] }"#;
    let extra = "[constraints]\nparameters = [\"x + 2*y <= 0.8\", \"x <= y\", \"n - 10*x >= 1\"]\n\n[generation]\nmethod = \"random\"";
    let runner = r#"command = ["sh", "-c", "echo f={x}"]"#;
    let e = Exp::new("cons", &toml("cons", params, runner, "max_trials = 60\nparallelism = 3", extra));
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 60);
    for t in &trials {
        let p = &t["parameters"];
        let (x, y, n) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap(), p["n"].as_f64().unwrap());
        assert!(x + 2.0 * y <= 0.8 + 1e-9, "{p}");
        assert!(x <= y + 1e-9, "{p}");
        assert!(n - 10.0 * x >= 1.0 - 1e-9, "{p}");
    }
}

#[test]
fn every_part_of_the_output_protocol_is_read() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }
mode = { type = "choice", values = ["json", "pairs", "result", "regex"] }"#;
    let script = r#"
import json, os, sys
p = json.loads(os.environ["OPTX_PARAMS"])
mode, x = p["mode"], p["x"]
for step in range(3):
    print(json.dumps({"step": step, "f": 100 + step}))
if mode == "json":
    print('INFO {"f": 1000}')          # not a report: text around the object
    print(json.dumps({"f": x, "lat": [5.0, 0.5], "ignored": 7}))
elif mode == "pairs":
    print(f"Epoch 3: step=3 f={x} lat=5")
elif mode == "result":
    print("f=999")
    with open(os.environ["OPTX_RESULT_FILE"], "w") as fh:
        json.dump({"f": x, "lat": 5}, fh)
else:
    print(f"the loss was {x}!")
    print("lat=5")
with open(os.path.join(os.environ["OPTX_TRIAL_DIR"], "extra.json"), "w") as fh:
    json.dump({"m": {"mem": 2.5}}, fh)
"#;
    let runner = r#"command = ["python3", "report.py"]"#;
    let extra = "[metrics.mem]\nfile = \"extra.json\"\npointer = \"/m/mem\"\n\n[constraints]\noutcomes = [\"lat <= 10\"]\n\n[generation]\nmethod = \"grid\"\ngrid_resolution = 2";
    let text_ = toml("proto", params, runner, "max_trials = 8\nparallelism = 2", extra);
    let e = Exp::new("proto", &text_);
    e.file("report.py", script);
    e.run_ok(&["run", "experiment.toml"]);
    for t in e.trials() {
        let mode = t["parameters"]["mode"].as_str().unwrap().to_string();
        let x = t["parameters"]["x"].as_f64().unwrap();
        if mode == "regex" {
            // Without a regex rule, "the loss was 0.5!" reports nothing: the final value
            // is the last one reported, the learning curve's last point.
            assert_eq!(status(&t), "COMPLETED", "{t}");
            assert_eq!(metric(&t, "f"), Some(102.0), "{t}");
            assert_eq!(t["metrics"]["f"]["progression"], 2.0);
            continue;
        }
        assert_eq!(status(&t), "COMPLETED", "{mode}: {t}");
        assert_eq!(metric(&t, "f"), Some(x), "{mode}: {t}");
        assert_eq!(metric(&t, "lat"), Some(5.0), "{mode}");
        assert_eq!(metric(&t, "mem"), Some(2.5), "{mode}");
        assert!(t["metrics"].get("ignored").is_none());
        assert_eq!(t["feasible"], true);
        if mode == "json" {
            assert_eq!(t["metrics"]["lat"]["sem"], 0.5);
        }
    }
    // The learning curve was stored as points with their progression.
    assert!(e.count("SELECT count(*) FROM observations WHERE metric = 'f' AND progression = 2 AND final = 0") >= 1);

    // With a regex rule the same script's sentence is read.
    let with_rule = text_.replace("[metrics.mem]", "[metrics.f]\nregex = 'loss was ([0-9.eE+-]+)'\n\n[metrics.mem]");
    let e2 = Exp::new("proto", &with_rule);
    e2.file("report.py", script);
    e2.run_ok(&["run", "experiment.toml", "-q"]);
    let regex_trials: Vec<_> = e2.trials().into_iter().filter(|t| t["parameters"]["mode"] == "regex").collect();
    assert!(!regex_trials.is_empty());
    for t in regex_trials {
        assert_eq!(status(&t), "COMPLETED", "{t}");
        assert_eq!(metric(&t, "f"), t["parameters"]["x"].as_f64());
    }
}

#[test]
fn shell_commands_get_every_value_quoted() {
    let params = r#"word = { type = "choice", values = ["a b", "$(touch pwned)", "it's"] }"#;
    let runner = r#"shell = true
command = "printf '%s' {word} > {trial_dir}/word.txt && echo f=1""#;
    let e = Exp::new("shell", &toml("shell", params, runner, "max_trials = 3", "[generation]\nmethod = \"grid\""));
    e.run_ok(&["run", "experiment.toml"]);
    for t in e.trials() {
        let word = std::fs::read_to_string(e.trial_dir(t["index"].as_u64().unwrap()).join("word.txt")).unwrap();
        assert_eq!(word, t["parameters"]["word"].as_str().unwrap());
    }
    assert!(!e.path().join("pwned").exists(), "a value was run as shell code");
}

#[test]
fn a_finite_space_ends_early_when_exhausted() {
    let params = r#"a = { type = "int", bounds = [1, 3] }
b = { type = "choice", values = ["x", "y"] }"#;
    let runner = r#"command = ["sh", "-c", "echo f={a}"]"#;
    let e = Exp::new("small", &toml("small", params, runner, "max_trials = 50\nparallelism = 2", ""));
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(text(&out).contains("the search space is exhausted: all 6 distinct arms have run"), "{}", text(&out));
    assert_eq!(e.trials().len(), 6);
}

#[test]
fn reports_show_the_best_feasible_point() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;
    // f = x, but x < 0.3 is infeasible (lat too high): the best is the smallest x >= 0.3.
    let runner = r#"command = ["python3", "-c", "x={x}; print(f'f={x} lat={{100 if x < 0.3 else 1}}')"]"#;
    let extra = "[constraints]\noutcomes = [\"lat <= 10\"]";
    let e = Exp::new("rep", &toml("rep", params, runner, "max_trials = 12\nparallelism = 3", extra));
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    let best = trials
        .iter()
        .filter(|t| t["feasible"] == true)
        .min_by(|a, b| metric(a, "f").partial_cmp(&metric(b, "f")).unwrap())
        .unwrap();
    assert!(trials.iter().any(|t| t["feasible"] == false), "some trial is infeasible");
    let json = e.optx(&["best", ".optx/rep.db", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(j["index"], best["index"]);
    assert!(j["objective"]["value"].as_f64().unwrap() >= 0.3);
    let status = e.optx(&["status", "experiment.toml"]);
    assert!(text(&status).contains("12 of 12 trials: 12 completed"), "{}", text(&status));
    let csv = e.optx(&["trials", "experiment.toml", "--format", "csv"]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(csv.lines().count(), 13);
    assert!(csv.starts_with("index,status,generation,x,f,lat,feasible,lost,reason"), "{csv}");
    let table = e.optx(&["trials", "experiment.toml"]);
    assert!(text(&table).contains("COMPLETED (infeasible)"));
}

#[test]
fn events_can_be_read_as_json_lines() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;
    let runner = r#"command = ["sh", "-c", "echo f={x}"]"#;
    let e = Exp::new("ev", &toml("ev", params, runner, "max_trials = 4", ""));
    let out = e.optx(&["run", "experiment.toml", "--events-json"]);
    assert_eq!(code(&out), 0);
    let events: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["event"], "started");
    assert_eq!(events.iter().filter(|e| e["event"] == "completed").count(), 4);
    assert_eq!(events.iter().filter(|e| e["event"] == "deployed").count(), 4);
}

#[test]
fn the_store_can_live_elsewhere_with_its_trial_dirs_beside_it() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;
    let runner = r#"command = ["sh", "-c", "echo f={x}"]"#;
    let e = Exp::new("where", &toml("where", params, runner, "max_trials = 3", ""));
    e.run_ok(&["run", "experiment.toml", "--store", "elsewhere/w.db", "--seed", "11", "-q"]);
    assert!(e.path().join("elsewhere/w.db").is_file());
    assert!(e.path().join("elsewhere/w.trials/2/stdout.log").is_file());
    assert!(!e.path().join(".optx").exists(), "nothing at the default place");
    let status = e.optx(&["status", "elsewhere/w.db"]);
    assert!(text(&status).contains("3 of 3 trials: 3 completed"), "{}", text(&status));
    e.run_ok(&["resume", "experiment.toml", "--store", "elsewhere/w.db", "--max-trials", "4", "-q"]);
    let status = e.optx(&["status", "elsewhere/w.db"]);
    assert!(text(&status).contains("4 of 4 trials: 4 completed"), "{}", text(&status));
}

#[test]
fn a_trial_that_rewrites_its_stdout_is_read_as_it_ends() {
    // The trial reopens /dev/stdout (truncating it) and writes a line of the same length.
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;
    let runner = r#"command = ["python3", "-c", "import time; print('f=1', flush=True); time.sleep(0.6); open('/dev/stdout', 'w').write('f=4\\n')"]"#;
    let orch = "max_trials = 1\ninitial_seconds_between_polls = 0.05";
    let e = Exp::new("rewrite", &toml("rewrite", params, runner, orch, ""));
    e.run_ok(&["run", "experiment.toml", "-q"]);
    let t = &e.trials()[0];
    assert_eq!(std::fs::read_to_string(e.trial_dir(0).join("stdout.log")).unwrap(), "f=4\n");
    assert_eq!(metric(t, "f"), Some(4.0), "the value the output holds at the end: {t}");
}
