//! Early stopping through the real binary: trials report learning curves on stdout, the rule
//! stops the bad ones while they run, and they end EARLY_STOPPED with their curves kept.

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

/// A loss curve `(x - 0.3)^2 + 1 / step` over 20 steps, 50 ms apart.
const TRIAL: &str = r#"import sys, time
x = float(sys.argv[1])
for step in range(1, 21):
    print(f"step={step} loss={(x - 0.3) ** 2 + 1.0 / step}", flush=True)
    time.sleep(0.05)
"#;

fn stopping_exp(name: &str, rule: &str) -> Exp {
    let text = format!(
        "[experiment]\nname = \"{name}\"\nseed = 1\n\n[parameters]\n{X}\n\n[objective]\nminimize = \"loss\"\n\n\
         [runner]\ncommand = [\"python3\", \"trial.py\", \"{{x}}\"]\n\n[orchestration]\nmax_trials = 16\nparallelism = 4\n\
         initial_seconds_between_polls = 0.1\n\n[generation]\nmethod = \"sobol\"\n\n[early_stopping]\n{rule}\n"
    );
    let e = Exp::new(name, &text);
    e.file("trial.py", TRIAL);
    e
}

fn distance(t: &serde_json::Value) -> f64 {
    (t["parameters"]["x"].as_f64().unwrap() - 0.3).powi(2)
}

#[test]
fn threshold_stops_exactly_the_curves_worse_than_the_value() {
    let e = stopping_exp(
        "es_threshold",
        "strategy = \"threshold\"\nmetric_threshold = 0.3\nmin_progression = 10\nmin_curves = 1",
    );
    let out = e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 16, "{}", text(&out));
    for t in &trials {
        let d = distance(t);
        // From step 10 on, the loss is d + 1/step <= d + 0.1: above 0.3 once d > 0.2, and
        // below it at every step when d < 0.15.
        if d > 0.2 {
            assert_eq!(status(t), "EARLY_STOPPED", "{t}");
            let reason = t["reason"].as_str().unwrap();
            assert!(reason.starts_with("threshold: its value") && reason.contains("at progression 10"), "{reason}");
            assert!(metric(t, "loss").is_some(), "its last value is kept: {t}");
        } else if d < 0.15 {
            assert_eq!(status(t), "COMPLETED", "{t}");
        }
    }
    assert!(trials.iter().any(|t| status(t) == "EARLY_STOPPED"));
    assert!(text(&out).contains("early-stopped"), "{}", text(&out));
    // The curves of stopped trials are kept, and they were stopped before their end.
    let stopped_points = e.count(
        "SELECT max(n) FROM (SELECT count(*) n FROM observations o JOIN trials t ON o.trial = t.idx \
         WHERE t.status = 'EARLY_STOPPED' AND o.final = 0 GROUP BY o.trial)",
    );
    assert!((10..20).contains(&stopped_points), "{stopped_points} points of a stopped trial's curve");
    let twice = e.count(
        "SELECT count(*) FROM (SELECT trial, progression, count(*) n FROM observations \
         WHERE final = 0 GROUP BY trial, progression HAVING n > 1)",
    );
    assert_eq!(twice, 0, "no point stored twice");
}

#[test]
fn percentile_stops_the_bad_curves_and_keeps_the_best() {
    let e = stopping_exp(
        "es_pct",
        "strategy = \"percentile\"\npercentile_threshold = 50\nmin_progression = 5\nmin_curves = 4",
    );
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 16);
    let stopped: Vec<&serde_json::Value> = trials.iter().filter(|t| status(t) == "EARLY_STOPPED").collect();
    assert!(stopped.len() >= 4, "{} stopped", stopped.len());
    // The best arm of the 16 is never stopped: at every progression it is below the median.
    let best = trials.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))).unwrap();
    assert_eq!(status(best), "COMPLETED", "{best}");
    for t in &stopped {
        assert!(t["reason"].as_str().unwrap().starts_with("percentile: its value"), "{t}");
        assert!(distance(t) > distance(best));
        // The decision is kept: at which progression, when, and on which report.
        let d = &t["stop_metadata"]["early_stopping"];
        let p = d["progression"].as_f64().unwrap_or_else(|| panic!("{t}"));
        assert!(p >= 5.0, "{t}");
        assert!(t["reason"].as_str().unwrap().contains(&format!("at progression {p} ")), "{t}");
        assert!(d["trigger"]["trial"].as_u64().is_some() && d["trigger"]["progression"].as_f64().is_some(), "{t}");
        assert!(d["decided_at"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
    }
    // A stopped trial's process group is gone.
    for t in &stopped {
        let (pid, _) = process(&e.trial_dir(t["index"].as_u64().unwrap()));
        if let Some(pid) = pid {
            assert!(!alive(pid as i32), "trial {} still runs", t["index"]);
        }
    }
}

fn global_exp(name: &str, command: &str, rule: &str) -> Exp {
    let text = toml(
        name,
        X,
        &format!("command = {command}"),
        "max_trials = 20",
        &format!("[generation]\nmethod = \"sobol\"\n\n[global_stopping]\n{rule}"),
    );
    Exp::new(name, &text)
}

#[test]
fn global_stopping_ends_a_converged_run_and_ignore_global_stopping_resumes_it() {
    // A flat objective: Ax's improvement rule sees no improvement over the window.
    let e = global_exp("gs_flat", "\"echo f=1.0\"", "strategy = \"improvement\"\nmin_trials = 5\nwindow_size = 5");
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(
        text(&out).contains("global stopping: the best objective improved by 0 over the last 5 trials"),
        "{}",
        text(&out)
    );
    assert_eq!(e.trials().len(), 6, "min_trials, and a window of 5 after one trial");
    // The reason is stored.
    assert_eq!(e.count("SELECT count(*) FROM events WHERE kind = 'global_stopping'"), 1);
    // A resume applies the rule again; with --ignore-global-stopping it goes on.
    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("global stopping"), "{}", text(&out));
    assert_eq!(e.trials().len(), 6);
    e.run_ok(&["resume", "experiment.toml", "--ignore-global-stopping"]);
    assert_eq!(e.trials().len(), 20);
}

#[test]
fn a_target_stops_the_run_once_reached() {
    let e = global_exp("gs_target", "\"echo f={x}\"", "strategy = \"target\"\nvalue = 0.6\nmin_trials = 3");
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(text(&out).contains("global stopping: the objective reached the target 0.6"), "{}", text(&out));
    let trials = e.trials();
    // The center point (x = 0.5) reaches it first; the rule waits for min_trials.
    assert_eq!(trials.len(), 3, "{trials:?}");
}

#[test]
fn asha_stops_at_its_rungs_only() {
    let e = stopping_exp(
        "es_asha",
        "strategy = \"asha\"\nmin_resource = 2\nmax_resource = 18\nreduction_factor = 3\nmin_curves = 1",
    );
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    let stopped: Vec<&serde_json::Value> = trials.iter().filter(|t| status(t) == "EARLY_STOPPED").collect();
    assert!(!stopped.is_empty(), "{trials:?}");
    for t in &stopped {
        let reason = t["reason"].as_str().unwrap();
        // Rungs at 2, 6 and 18 (max_resource), nowhere else.
        assert!(["2", "6", "18"].iter().any(|r| reason.starts_with(&format!("asha: at rung {r} "))), "{reason}");
    }
    let best = trials.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))).unwrap();
    assert_eq!(status(best), "COMPLETED", "{best}");
}

#[test]
fn tell_progression_answers_as_the_rule_decides() {
    let text = toml(
        "es_tell",
        X,
        "command = \"echo f=0.3\"",
        // A run that ends at once (its deadline), so that the store exists.
        "max_trials = 5\ntimeout_hours = 0.000001",
        "[early_stopping]\nstrategy = \"threshold\"\nmetric_threshold = 0.5\nmin_progression = 2\nmin_curves = 1",
    );
    let e = Exp::new("es_tell", &text);
    e.run_ok(&["run", "experiment.toml"]);
    let before = e.trials().len();
    let asked = e.run_ok(&["ask", "experiment.toml", "--json"]);
    let a: serde_json::Value = serde_json::from_slice(&asked.stdout).unwrap();
    let index = a["index"].as_u64().unwrap().to_string();
    let tell = |p: &str, v: &str| {
        let out = e.run_ok(&["tell", "experiment.toml", &index, "--progression", p, &format!("f={v}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(tell("1", "0.9"), "continue", "before min_progression");
    assert_eq!(tell("2", "0.4"), "continue");
    assert_eq!(tell("3", "0.7"), "stop");
    let t = &e.trials()[before];
    assert_eq!(status(t), "EARLY_STOPPED");
    assert_eq!(metric(t, "f"), Some(0.7), "its last value is its final one");
    // A point for a trial stopped earlier: stored, and the answer is stop again.
    assert_eq!(tell("4", "0.1"), "stop");
    assert_eq!(e.count("SELECT count(*) FROM observations WHERE final = 0"), 4);
}

#[test]
fn replay_reproduces_a_runs_decisions_and_tunes_a_rule_on_a_run_without_one() {
    let rule = "strategy = \"percentile\"\npercentile_threshold = 50\nmin_progression = 5\nmin_curves = 4";
    let e = stopping_exp("es_replay", rule);
    e.run_ok(&["run", "experiment.toml"]);
    let stopped = e.trials().iter().filter(|t| status(t) == "EARLY_STOPPED").count();
    assert!(stopped > 0);
    let out = e.run_ok(&["replay", ".optx/es_replay.db"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("the run's own decisions are reproduced exactly"), "{said}");
    assert_eq!(said.lines().filter(|l| l.ends_with("(as the run did)")).count(), stopped, "{said}");
    // The same rule over a run that had none: what it would have stopped and saved.
    let plain = stopping_exp("es_plain", rule);
    let file = std::fs::read_to_string(plain.path().join("experiment.toml")).unwrap();
    plain.file("experiment.toml", file.split("[early_stopping]").next().unwrap());
    plain.file("rule.toml", &file);
    plain.run_ok(&["run", "experiment.toml"]);
    assert!(plain.trials().iter().all(|t| status(t) == "COMPLETED"));
    let out = plain.run_ok(&["replay", ".optx/es_plain.db", "--with", "rule.toml"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let share: f64 = said
        .lines()
        .find_map(|l| l.split("progressions saved: ").nth(1))
        .and_then(|s| s.split('(').nth(1)?.split('%').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(share > 10.0, "{said}");
    assert!(said.contains("(the run let it go on: COMPLETED)"), "{said}");
    // A store and a file without a rule: nothing to replay (exit 2).
    let out = plain.optx(&["replay", ".optx/es_plain.db"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

#[test]
fn timeout_hours_leaves_trials_still_running_after_stop_grace_to_a_resume() {
    let runner = "command = [\"sh\", \"-c\", \"sleep 4; echo f=0.5\"]\nstop_grace = \"1s\"";
    // A deadline of about a second.
    let e = Exp::new("deadline", &toml("deadline", X, runner, "max_trials = 1\ntimeout_hours = 0.0003", ""));
    let started = std::time::Instant::now();
    // Its output to files: the trial's helper, which outlives optx, holds no pipe of ours.
    let mut run = e.spawn(&["run", "experiment.toml"], "run");
    let code = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s.code();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{}", e.log("run"));
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "optx waited for the trial: {}", e.log("run"));
    assert_eq!(code, Some(0), "{}", e.log("run"));
    assert!(e.log("run").contains("timeout_hours reached: 1 trial(s) left running"), "{}", e.log("run"));
    assert_eq!(status(&e.trials()[0]), "RUNNING");
    // The trial went on without optx; a resume (without the deadline) collects it.
    let file = std::fs::read_to_string(e.path().join("experiment.toml")).unwrap();
    e.file("experiment.toml", &file.replace("timeout_hours = 0.0003", ""));
    e.run_ok(&["resume", "experiment.toml"]);
    assert_eq!(status(&e.trials()[0]), "COMPLETED");
}

#[test]
fn protect_best_keeps_the_top_trials_running_and_no_curve_is_said_once() {
    // Worse than the 10th percentile: nearly everything, but for the three best.
    let rule =
        "strategy = \"percentile\"\npercentile_threshold = 90\nmin_progression = 5\nmin_curves = 4\nprotect_best = 3";
    let e = stopping_exp("es_protect", rule);
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    let mut ranked: Vec<&serde_json::Value> = trials.iter().collect();
    ranked.sort_by(|a, b| distance(a).total_cmp(&distance(b)));
    assert_eq!(status(ranked[0]), "COMPLETED", "the best arm: {:?}", ranked[0]);
    assert!(trials.iter().filter(|t| status(t) == "COMPLETED").count() >= 3, "{trials:?}");
    assert!(trials.iter().any(|t| status(t) == "EARLY_STOPPED"));
    // A file whose trials report no curve still runs, and says so once.
    let flat = Exp::new(
        "es_none",
        &toml(
            "es_none",
            X,
            "command = \"echo f={x}\"",
            "max_trials = 3",
            "[early_stopping]\nstrategy = \"percentile\"",
        ),
    );
    let out = flat.run_ok(&["run", "experiment.toml"]);
    assert_eq!(text(&out).matches("ended without a point of a learning curve of `f`").count(), 1, "{}", text(&out));
}

#[test]
fn patience_spares_a_trial_that_was_not_worse_over_its_whole_window() {
    // Every curve starts at 0 (a tie, never worse), then behaves as before: a window that
    // reaches back to step 1 always holds a point where the trial is not worse.
    let early = TRIAL.replace("(x - 0.3) ** 2 + 1.0 / step", "0.0 if step == 1 else (x - 0.3) ** 2 + 1.0 / step");
    let rule = |patience: u32| {
        format!("strategy = \"percentile\"\nmin_progression = 5\nmin_curves = 4\npatience = {patience}")
    };
    let patient = stopping_exp("es_patient", &rule(30));
    patient.file("trial.py", &early);
    patient.run_ok(&["run", "experiment.toml"]);
    assert!(patient.trials().iter().all(|t| status(t) == "COMPLETED"), "{:?}", patient.trials());
    let eager = stopping_exp("es_eager", &rule(0));
    eager.file("trial.py", &early);
    eager.run_ok(&["run", "experiment.toml"]);
    assert!(eager.trials().iter().any(|t| status(t) == "EARLY_STOPPED"));
}
