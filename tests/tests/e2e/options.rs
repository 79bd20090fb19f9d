//! Orchestration and generation options, each doing what the table in the README says.

use std::time::{Duration, Instant};

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }
n = { type = "int", bounds = [1, 9] }"#;

#[test]
fn initial_points_run_first_and_missing_keys_take_the_center() {
    let extra = "[generation]\ninitial_points = [{ x = 0.25, n = 2 }, { x = 0.75 }]";
    let e = Exp::new("init", &toml("init", X, r#"command = ["sh", "-c", "echo f={x}"]"#, "max_trials = 4", extra));
    e.run_ok(&["run", "experiment.toml", "-q"]);
    let t = e.trials();
    assert_eq!(t[0]["generation"], "initial_point");
    assert_eq!(t[0]["parameters"], serde_json::json!({"x": 0.25, "n": 2}));
    assert_eq!(t[1]["parameters"], serde_json::json!({"x": 0.75, "n": 5}), "n is the center");
    assert_eq!(t[2]["generation"], "center");
    assert_eq!(t[3]["generation"], "sobol");
}

#[test]
fn keep_trial_dirs_failed_keeps_only_the_failed_ones() {
    let runner = r#"command = ["sh", "-c", "if [ {trial} = 1 ]; then exit 1; fi; echo f={x}"]
keep_trial_dirs = "failed""#;
    let e = Exp::new("keep", &toml("keep", X, runner, "max_trials = 3", ""));
    assert_eq!(code(&e.optx(&["run", "experiment.toml", "-q"])), 0);
    assert!(!e.trial_dir(0).exists());
    assert!(e.trial_dir(1).join("stderr.log").exists());
    assert!(!e.trial_dir(2).exists());
}

#[test]
fn a_trial_past_its_ttl_fails_and_is_stopped() {
    let runner = r#"command = ["sh", "-c", "if [ {trial} = 0 ]; then sleep 30; fi; echo f={x}"]
stop_grace = "1s""#;
    let orch = "max_trials = 2\nttl_seconds_for_trials = 1\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("ttl", &toml("ttl", X, runner, orch, ""));
    let start = Instant::now();
    assert_eq!(code(&e.optx(&["run", "experiment.toml", "-q"])), 0);
    assert!(start.elapsed() < Duration::from_secs(10));
    let t = e.trials();
    assert_eq!(status(&t[0]), "FAILED");
    assert!(t[0]["reason"].as_str().unwrap().contains("ttl_seconds_for_trials"), "{}", t[0]);
    assert_eq!(status(&t[1]), "COMPLETED");
}

#[test]
fn max_cost_stops_deploying_once_the_budget_is_spent() {
    let runner = r#"command = ["sh", "-c", "echo f={x} cost=1"]"#;
    let e = Exp::new("cost", &toml("cost", X, runner, "max_trials = 20\nmax_cost = 3", ""));
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(text(&out).contains("the cost budget is spent"), "{}", text(&out));
    assert_eq!(e.trials().len(), 3);
}

#[test]
fn timeout_hours_ends_the_run_gracefully_and_resume_continues() {
    let runner = r#"command = ["sh", "-c", "sleep 0.5; echo f={x}"]"#;
    // 1.8 seconds: the first trial ends, the run stops deploying and exits 0.
    let e = Exp::new("deadline", &toml("deadline", X, runner, "max_trials = 20\ntimeout_hours = 0.0005", ""));
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(text(&out).contains("timeout_hours reached"), "{}", text(&out));
    let n = e.trials().len();
    assert!((2..20).contains(&n), "{n} trials before the deadline");
    assert!(e.trials().iter().all(|t| status(t) == "COMPLETED"), "running trials were waited for");
    let text_ =
        std::fs::read_to_string(e.path().join("experiment.toml")).unwrap().replace("timeout_hours = 0.0005", "");
    e.file("experiment.toml", &text_);
    e.run_ok(&["resume", "experiment.toml", "-q"]);
    assert_eq!(e.trials().len(), 20);
}

#[test]
fn a_candidate_that_never_started_is_deployed_on_resume() {
    let runner = r#"command = ["sh", "-c", "echo f={x}"]"#;
    let e = Exp::new("cand", &toml("cand", X, runner, "max_trials = 3", ""));
    assert_eq!(code(&e.optx(&["run", "experiment.toml", "-q", "--max-trials", "2"])), 0);
    // optx died right after recording a candidate: fake that state in the store.
    let conn = rusqlite::Connection::open(e.store()).unwrap();
    conn.execute(
        "INSERT INTO trials (idx, status, status_code, arm_key, parameters, generation, attempt, session, created_at)
         VALUES (2, 'CANDIDATE', 0, '{\"x\":0.125,\"n\":3}', '{\"x\":0.125,\"n\":3}', 'sobol', 1, 1, '2026-01-01T00:00:00Z')",
        [],
    )
    .unwrap();
    drop(conn);
    e.run_ok(&["resume", ".optx/cand.db", "--max-trials", "3"]);
    let t = e.trials();
    assert_eq!(t.len(), 3, "no extra trial: the candidate itself ran");
    assert_eq!(status(&t[2]), "COMPLETED");
    assert_eq!(metric(&t[2], "f"), Some(0.125));
}
