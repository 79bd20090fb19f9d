//! Losing nothing: kill -9 of optx, resume, ownership, changed files.

use std::collections::{HashMap, HashSet};

use crate::common::*;

const XY: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }
y = { type = "float", bounds = [0.0, 1.0] }"#;

fn slow(name: &str, max_trials: u32, sleep: &str) -> Exp {
    let runner = format!("command = [\"sh\", \"-c\", \"sleep {sleep}; echo f={{x}} g={{y}}\"]");
    let orch = format!("max_trials = {max_trials}\nparallelism = 3\ninitial_seconds_between_polls = 0.1");
    Exp::new(name, &toml(name, XY, &runner, &orch, "[metrics.g]"))
}

fn completed(e: &Exp) -> HashMap<u64, serde_json::Value> {
    e.trials().into_iter().filter(|t| status(t) == "COMPLETED").map(|t| (t["index"].as_u64().unwrap(), t)).collect()
}

/// Every property CONFIG.md promises after a crash and a resume.
fn assert_consistent(e: &Exp, before: &HashMap<u64, serde_json::Value>, max_trials: usize) {
    let trials = e.trials();
    for (i, t) in before {
        let now = &trials[*i as usize];
        assert_eq!(status(now), "COMPLETED", "trial {i} completed before the kill stays completed");
        assert_eq!(now["parameters"], t["parameters"]);
        assert_eq!(now["metrics"], t["metrics"], "trial {i} keeps its values");
    }
    let mut arms = HashSet::new();
    for t in trials.iter().filter(|t| status(t) == "COMPLETED") {
        assert!(arms.insert(t["parameters"].to_string()), "arm completed twice: {}", t["parameters"]);
        // The values are the trial's own (f = x, g = y), not another trial's output.
        assert_eq!(metric(t, "f"), t["parameters"]["x"].as_f64());
        assert_eq!(metric(t, "g"), t["parameters"]["y"].as_f64());
    }
    let not_lost: Vec<_> = trials.iter().filter(|t| t["lost"] == false).collect();
    assert_eq!(not_lost.len(), max_trials, "exactly max_trials trials that are not lost");
    for t in &trials {
        assert!(["COMPLETED", "FAILED"].contains(&status(t)), "every trial ended: {t}");
    }
}

#[test]
fn kill_9_in_the_middle_then_resume_loses_nothing() {
    let e = slow("k9", 15, "0.6");
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "4 completed trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 4);
    e.wait_for(60, "running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") >= 1);
    optx.kill().unwrap(); // SIGKILL
    optx.wait().unwrap();
    let before = completed(&e);
    let running_at_kill = e.count("SELECT count(*) FROM trials WHERE status IN ('CANDIDATE', 'STAGED', 'RUNNING')");
    assert!(running_at_kill >= 1);

    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("re-attached"), "{}", text(&out));
    assert_consistent(&e, &before, 15);
    // The trials that were running outlived optx and were read, not lost.
    let lost = e.trials().iter().filter(|t| t["lost"] == true).count();
    assert_eq!(lost, 0, "the shepherd kept them: {}", text(&out));
}

#[test]
fn trials_that_died_with_optx_are_lost_and_run_again() {
    let e = slow("lost", 9, "2");
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "3 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 3);
    // The machine loses everything: optx, its shepherd, the trials.
    let shepherds = children(optx.id());
    let pids: Vec<u32> = e.trials().iter().filter_map(|t| process(&e.trial_dir(t["index"].as_u64()?)).0).collect();
    assert_eq!(pids.len(), 3);
    optx.kill().unwrap();
    optx.wait().unwrap();
    for s in shepherds {
        signal(s, "KILL");
    }
    for p in &pids {
        signal(*p, "KILL");
    }
    let out = e.run_ok(&["resume", ".optx/lost.db"]);
    let trials = e.trials();
    let lost: Vec<_> = trials.iter().filter(|t| t["lost"] == true).collect();
    assert_eq!(lost.len(), 3, "{}", text(&out));
    for l in &lost {
        assert!(l["reason"].as_str().unwrap().contains("optx was not running"), "{l}");
        let i = l["index"].as_u64().unwrap();
        let rerun = trials.iter().find(|t| t["rerun_of"] == i).expect("a lost arm runs again");
        assert_eq!(rerun["parameters"], l["parameters"]);
        assert_eq!(status(rerun), "COMPLETED");
    }
    assert_consistent(&e, &HashMap::new(), 9);
}

#[test]
fn run_refuses_an_existing_store_and_fresh_sets_it_aside() {
    let e = slow("again", 3, "0");
    assert_eq!(code(&e.optx(&["run", "experiment.toml", "-q"])), 0);
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 2);
    let msg = text(&out);
    assert!(msg.contains("optx resume") && msg.contains("--fresh"), "{msg}");
    e.run_ok(&["run", "experiment.toml", "--fresh", "-q"]);
    let backups: Vec<String> = std::fs::read_dir(e.path().join(".optx"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bak-"))
        .collect();
    assert!(backups.iter().any(|b| b.starts_with("again.db.bak-")), "{backups:?}");
    assert!(backups.iter().any(|b| b.starts_with("again.trials.bak-")), "{backups:?}");
    assert_eq!(e.trials().len(), 3);
}

#[test]
fn a_second_optx_on_the_same_store_is_refused_and_names_the_owner() {
    let e = slow("owned", 6, "3");
    let mut first = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") >= 1);
    let out = e.optx(&["resume", "experiment.toml"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains(&format!("in use by another optx (pid {}", first.id())), "{}", text(&out));
    let out = e.optx(&["run", "experiment.toml", "--fresh"]);
    assert_eq!(code(&out), 2, "--fresh must not set aside a store in use: {}", text(&out));
    first.kill().unwrap();
    first.wait().unwrap();
    // The owner is gone: the store can be taken over.
    e.run_ok(&["resume", "experiment.toml", "-q"]);
}

#[test]
fn resume_refuses_changed_parameters_unless_allowed_and_can_raise_the_budget() {
    let e = slow("changed", 3, "0");
    assert_eq!(code(&e.optx(&["run", "experiment.toml", "-q"])), 0);
    let original = std::fs::read_to_string(e.path().join("experiment.toml")).unwrap();
    // Orchestration may change freely, comments and layout do not count.
    e.file("experiment.toml", &format!("# a comment\n{}", original.replace("parallelism = 3", "parallelism = 2")));
    e.run_ok(&["resume", "experiment.toml", "--max-trials", "5", "-q"]);
    assert_eq!(e.trials().len(), 5);
    // A changed search space is refused with a diff.
    e.file("experiment.toml", &original.replace("bounds = [0.0, 1.0] }\ny", "bounds = [0.0, 2.0] }\ny"));
    let out = e.optx(&["resume", "experiment.toml", "--max-trials", "6"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).contains("[parameters] x:") && text(&out).contains("--allow-changes"), "{}", text(&out));
    e.run_ok(&["resume", "experiment.toml", "--max-trials", "6", "--allow-changes", "-q"]);
    assert_eq!(e.trials().len(), 6);
    // From the store, anywhere: the stored file and the raised budget are kept.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(optx_bin())
        .args(["resume", &e.store().display().to_string(), "-q"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(e.trials().len(), 6, "resuming a finished experiment runs nothing more");
}

#[test]
fn resuming_from_the_file_takes_its_edited_values_over_an_earlier_command_line() {
    let e = slow("edited", 4, "0");
    e.run_ok(&["run", "experiment.toml", "--max-trials", "2", "--parallelism", "1", "-q"]);
    assert_eq!(e.trials().len(), 2);
    // The file says 4 trials: resuming from it runs 4, not the 2 of the old command line.
    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("`--max-trials 2` of an earlier command line no longer applies"), "{}", text(&out));
    assert_eq!(e.trials().len(), 4);
    // Raised on this command line, the override holds, and resuming from the store keeps it.
    e.run_ok(&["resume", "experiment.toml", "--max-trials", "5", "-q"]);
    assert_eq!(e.trials().len(), 5);
    e.run_ok(&["resume", ".optx/edited.db", "-q"]);
    assert_eq!(e.trials().len(), 5, "from the store, the last command line's budget holds");
}
