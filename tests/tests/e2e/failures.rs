//! A failed trial is data, not a crash of optx: each misbehaviour ends as a FAILED trial
//! with a reason, and optx goes on.

use std::time::{Duration, Instant};

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

fn one_trial(name: &str, runner: &str) -> (Exp, serde_json::Value, std::process::Output) {
    let e = Exp::new(name, &toml(name, X, runner, "max_trials = 1\nmin_failed_trials_for_failure_rate_check = 5", ""));
    let out = e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 1);
    let t = trials[0].clone();
    (e, t, out)
}

#[test]
fn a_non_zero_exit_fails_the_trial_with_its_code_and_stderr() {
    let (_e, t, out) = one_trial("exit3", r#"command = ["sh", "-c", "echo f=1; echo 'Traceback: boom' >&2; exit 3"]"#);
    assert_eq!(code(&out), 0, "a failed trial is not a failed run: {}", text(&out));
    assert_eq!(status(&t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("exit code 3") && reason.contains("Traceback: boom"), "{reason}");
    assert_eq!(t["lost"], false);
}

#[test]
fn garbage_on_stdout_is_skipped_and_a_missing_metric_fails_the_trial() {
    let garbage = r#"command = ["sh", "-c", "printf '\\377\\376\\000 {{not json\\n{{\"f\": }}\\n=== f= f=abc\\n'; head -c 3000 /dev/urandom; printf '\\nf=0.25\\n'"]"#;
    let (_e, t, _) = one_trial("garbage", garbage);
    assert_eq!(status(&t), "COMPLETED", "{t}");
    assert_eq!(metric(&t, "f"), Some(0.25));

    let (_e, t, _) = one_trial("missing", r#"command = ["sh", "-c", "echo loss=1; echo 'no metric here' >&2"]"#);
    assert_eq!(status(&t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("metric `f` was not reported") && reason.contains("no metric here"), "{reason}");

    let (_e, t, _) =
        one_trial("nan", r#"command = ["python3", "-c", "import json; print(json.dumps({{'f': float('nan')}}))"]"#);
    assert_eq!(status(&t), "FAILED");
    assert!(t["reason"].as_str().unwrap().contains("metric `f` is not finite"), "{t}");
}

#[test]
fn a_trial_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let runner = r#"command = ["sh", "-c", "trap '' TERM; echo started; sleep 30; echo f=1"]
timeout = "1s"
stop_grace = "1s""#;
    let start = Instant::now();
    let (e, t, out) = one_trial("ignoreterm", runner);
    let took = start.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(status(&t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("timed out after 1s") && reason.contains("SIGKILL"), "{reason}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(process(&e.trial_dir(0)).1, Some(serde_json::json!({"signal": 9})));
}

#[test]
fn a_timeout_ends_a_polite_trial_with_sigterm() {
    let runner = r#"command = ["sleep", "30"]
timeout = "1s"
stop_grace = "10s""#;
    let start = Instant::now();
    let (_e, t, _) = one_trial("polite", runner);
    assert!(start.elapsed() < Duration::from_secs(8), "no need to wait for the grace period");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.starts_with("timed out after 1s (stopped with SIGTERM)"), "{reason}");
}

#[test]
fn a_leaked_grandchild_is_killed_with_the_group() {
    // One trial exits normally leaving a grandchild; one times out with a grandchild.
    let runner = r#"command = ["sh", "-c", "sleep 300 & echo $! > gc.pid; if [ {trial} = 1 ]; then sleep 30; fi; echo f=1"]
workdir = "{trial_dir}"
timeout = "1s"
stop_grace = "1s""#;
    let e = Exp::new("leak", &toml("leak", X, runner, "max_trials = 2\nparallelism = 2", ""));
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(status(&trials[0]), "COMPLETED");
    assert_eq!(status(&trials[1]), "FAILED");
    for i in 0..2 {
        let pid: i32 = std::fs::read_to_string(e.trial_dir(i).join("gc.pid")).unwrap().trim().parse().unwrap();
        e.wait_for(5, "the grandchild to die", |_| !alive(pid));
    }
}

#[test]
fn a_script_that_does_not_exist_fails_before_it_runs() {
    let (_e, t, out) = one_trial("nosuch", r#"command = ["./no-such-script.sh", "{x}"]"#);
    assert_eq!(code(&out), 0);
    assert_eq!(status(&t), "FAILED");
    assert!(t["started_at"].is_null(), "it never ran: {t}");
    assert!(t["reason"].as_str().unwrap().contains("could not start"), "{t}");
}

#[test]
fn too_many_failures_stop_the_run_with_exit_1() {
    let runner = r#"command = ["sh", "-c", "echo no module named torch >&2; exit 1"]"#;
    let orch = "max_trials = 40\nparallelism = 2\ntolerated_trial_failure_rate = 0.5\nmin_failed_trials_for_failure_rate_check = 3";
    let e = Exp::new("rate", &toml("rate", X, runner, orch, ""));
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("tolerated_trial_failure_rate"), "{}", text(&out));
    // Why they failed, grouped, with the end of stderr.
    let said = text(&out);
    let group = said.lines().skip_while(|l| !l.contains("tolerated_trial_failure_rate")).nth(1).unwrap_or_default();
    assert!(group.contains(" x (trial 0, 1") && group.ends_with("exit code 1; stderr ends with:"), "{said}");
    assert!(said.contains("      | no module named torch"), "{said}");
    let n = e.trials().len();
    assert!((3..=5).contains(&n), "stopped early, after {n} trials");
}

#[test]
fn failed_arms_are_retried_as_new_trials_that_count() {
    // Fails on the first attempt of each arm, succeeds on the retry.
    let runner = r#"command = ["sh", "-c", "k=$(echo {x} | md5sum | cut -c1-8); if [ -e ../../seen-$k ]; then echo f={x}; else touch ../../seen-$k; exit 1; fi"]
workdir = "{trial_dir}""#;
    let orch = "max_trials = 6\nretries_per_failed_arm = 1\ntolerated_trial_failure_rate = 1.0";
    let e = Exp::new("retry", &toml("retry", X, runner, orch, ""));
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 6);
    let failed: Vec<_> = trials.iter().filter(|t| status(t) == "FAILED").collect();
    let retries: Vec<_> = trials.iter().filter(|t| t["generation"] == "retry").collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(retries.len(), 3);
    for r in retries {
        assert_eq!(status(r), "COMPLETED");
        let of = r["rerun_of"].as_u64().unwrap() as usize;
        assert_eq!(trials[of]["parameters"], r["parameters"]);
        assert_eq!(r["attempt"], 2);
    }
}
