//! What a restart finds after the hard cases: optx, its shepherd and the trials killed
//! together, a shepherd frozen with a request in its pipe, a shepherd that dies under a
//! running optx, and an interrupt during a Bayesian proposal.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

/// A trial that reports a learning curve of `steps` points, one each 0.1 s.
fn curve(name: &str, steps: u32, max_trials: u32) -> Exp {
    let runner =
        format!("command = [\"sh\", \"-c\", \"for i in $(seq 1 {steps}); do echo step=$i f={{x}}; sleep 0.1; done\"]");
    let orch = format!("max_trials = {max_trials}\nparallelism = 1\ninitial_seconds_between_polls = 0.05");
    Exp::new(name, &toml(name, X, &runner, &orch, ""))
}

fn curve_points(e: &Exp, trial: u64) -> i64 {
    e.count(&format!(
        "SELECT count(*) FROM observations WHERE trial = {trial} AND final = 0 AND progression IS NOT NULL"
    ))
}

fn stdout_reports(e: &Exp, trial: u64) -> i64 {
    let out = std::fs::read_to_string(e.trial_dir(trial).join("stdout.log")).unwrap_or_default();
    out.lines().filter(|l| l.starts_with("step=")).count() as i64
}

#[test]
fn a_trial_killed_with_optx_and_its_shepherd_is_lost_and_its_curve_is_stored_once() {
    let e = curve("reboot", 30, 2);
    let optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "10 points of trial 0", |e| curve_points(e, 0) >= 10);
    // As a reboot does: everything goes at once (frozen first, so that none sees the others go).
    let shepherd = shepherd_of(optx.id());
    let trial = process(&e.trial_dir(0)).0.expect("trial 0 recorded its pid");
    for p in [optx.id(), shepherd] {
        freeze(p);
    }
    signal_group(trial, "KILL");
    for p in [shepherd, optx.id()] {
        signal(p, "KILL");
    }
    let mut optx = optx;
    optx.wait().unwrap();
    let out = e.run_ok(&["resume", "experiment.toml"]);
    let trials = e.trials();
    let t0 = &trials[0];
    assert_eq!(status(t0), "FAILED", "a partial curve is not a result: {t0}\n{}", text(&out));
    assert_eq!(t0["lost"], true, "{t0}");
    assert!(t0["reason"].as_str().unwrap().contains("no exit status"), "{t0}");
    let rerun = trials.iter().find(|t| t["rerun_of"] == 0).expect("its arm runs again");
    assert_eq!(status(rerun), "COMPLETED");
    assert_eq!(trials.iter().filter(|t| t["lost"] == false).count(), 2);
    assert_eq!(curve_points(&e, 0), stdout_reports(&e, 0), "each point of trial 0's curve is stored once");
}

#[test]
fn a_re_attached_trial_stores_each_point_of_its_curve_once() {
    let e = curve("reattach", 25, 1);
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "8 points of trial 0", |e| curve_points(e, 0) >= 8);
    optx.kill().unwrap();
    optx.wait().unwrap();
    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("re-attached"), "{}", text(&out));
    let t = &e.trials()[0];
    assert_eq!(status(t), "COMPLETED", "{t}");
    assert_eq!(curve_points(&e, 0), 25, "25 points reported, 25 stored");
}

#[test]
fn a_request_left_in_a_frozen_shepherd_never_runs_a_trial_a_second_time() {
    // Every execution logs itself. Trial 0 outlives its timeout; the shepherd is frozen
    // while it runs, so trial 1's request waits in its pipe when optx is killed.
    let log = tempfile::NamedTempFile::new().unwrap();
    let runner = format!(
        "command = [\"sh\", \"-c\", \"echo {{trial}} >> {}; if [ {{trial}} = 0 ]; then sleep 30; fi; sleep 0.2; echo f={{x}}\"]\ntimeout = \"1s\"\nstop_grace = \"0s\"",
        log.path().display()
    );
    let orch = "max_trials = 3\nparallelism = 1\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("frozen", &toml("frozen", X, &runner, orch, ""));
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "trial 0 running", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 1);
    let shepherd = shepherd_of(optx.id());
    freeze(shepherd);
    e.wait_for(60, "trial 1 to be asked for", |e| e.count("SELECT count(*) FROM trials WHERE idx = 1") == 1);
    std::thread::sleep(Duration::from_millis(300));
    optx.kill().unwrap();
    optx.wait().unwrap();
    let out = e.run_ok(&["resume", "experiment.toml"]);
    // The old shepherd wakes up with the stale request in its pipe.
    signal(shepherd, "CONT");
    std::thread::sleep(Duration::from_millis(1500));
    let runs = std::fs::read_to_string(log.path()).unwrap();
    let mut per_trial: HashMap<&str, usize> = HashMap::new();
    for l in runs.lines() {
        *per_trial.entry(l.trim()).or_default() += 1;
    }
    assert!(per_trial.values().all(|n| *n == 1), "a trial ran twice: {runs}\n{}", text(&out));
    let t1 = &e.trials()[1];
    assert_eq!(status(t1), "COMPLETED", "{t1}");
    assert_eq!(t1["lost"], false, "it never started, so it was deployed as it was: {t1}");
}

#[test]
fn a_shepherd_killed_from_outside_is_replaced_and_the_run_completes() {
    let runner = r#"command = ["sh", "-c", "sleep 0.5; echo f={x}"]"#;
    let orch = "max_trials = 10\nparallelism = 2\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("respawn", &toml("respawn", X, runner, orch, ""));
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "2 completed", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 2);
    signal(shepherd_of(optx.id()), "KILL");
    let st = optx.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", e.log("run"));
    assert!(e.log("run").contains("started a new one"), "{}", e.log("run"));
    let trials = e.trials();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false && status(t) == "COMPLETED").count(), 10);
    assert!(trials.iter().filter(|t| t["lost"] == true).count() <= 2, "only the trials running then: {trials:?}");
}

#[test]
fn a_trial_that_kills_the_shepherd_ends_the_run_after_a_few_lost_trials() {
    let runner = r#"command = ["sh", "-c", "kill -9 $PPID; echo f={x}"]"#;
    let e = Exp::new("killer", &toml("killer", X, runner, "max_trials = 1000\nparallelism = 1", ""));
    let start = std::time::Instant::now();
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("trials in a row were lost"), "{}", text(&out));
    assert!(start.elapsed() < Duration::from_secs(60));
    let n = e.trials().len();
    assert!((5..=12).contains(&n), "{n} trials: lost deployments are bounded");
    assert!(e.trials().iter().all(|t| t["lost"] == true));
}

#[test]
fn an_interrupt_during_a_bayesian_proposal_deploys_nothing_more() {
    let params: String = (1..=6).map(|i| format!("x{i} = {{ type = \"float\", bounds = [0.0, 1.0] }}\n")).collect();
    let runner = r#"command = ["sh", "-c", "echo f={x1}"]"#;
    let gen = "[generation]\nmethod = \"auto\"\ninitial_trials = 5";
    let e = Exp::new("bo_int", &toml("bo_int", &params, runner, "max_trials = 200\nparallelism = 1", gen));
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(120, "Bayesian proposals", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 12);
    // The last trial has ended (its exit is recorded) but the store does not say so yet:
    // its end and the next proposal share one transaction, so a proposal is being computed.
    let sent = loop {
        let last = e.count("SELECT max(idx) FROM trials") as u64;
        let running =
            |e: &Exp| e.count(&format!("SELECT count(*) FROM trials WHERE idx = {last} AND status = 'RUNNING'")) == 1;
        if running(&e) && process(&e.trial_dir(last)).1.is_some() {
            std::thread::sleep(Duration::from_millis(20));
            if running(&e) {
                let at = SystemTime::now();
                signal(optx.id(), "INT");
                break at;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let st = optx.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{}", e.log("run"));
    let sent = humantime::format_rfc3339_millis(sent).to_string();
    for t in e.trials() {
        let started = t["started_at"].as_str().unwrap_or("");
        assert!(started <= sent.as_str(), "trial {} started at {started}, after the interrupt at {sent}", t["index"]);
    }
    let last = e.trials().last().cloned().unwrap();
    assert_eq!(status(&last), "COMPLETED", "the trial that had ended is recorded: {last}");
}
