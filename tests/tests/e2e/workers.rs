//! Workers hold leases on the store: a live one keeps it (on this host or another), a dead
//! one (gone, or silent past its lease) is taken over, and one taken over stops writing.

use std::time::Duration;

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

fn exp(name: &str, sleep: &str, max_trials: u32, extra_orch: &str) -> Exp {
    let runner = format!("command = [\"sh\", \"-c\", \"sleep {sleep}; echo f={{x}}\"]");
    let orch = format!("max_trials = {max_trials}\nparallelism = 1\ninitial_seconds_between_polls = 0.1\n{extra_orch}");
    Exp::new(name, &toml(name, X, &runner, &orch, "[generation]\nmethod = \"sobol\""))
}

#[test]
fn a_worker_on_another_host_keeps_the_store_while_its_lease_runs_and_not_after() {
    let e = exp("remote", "0", 2, "");
    e.run_ok(&["run", "experiment.toml", "-q"]);
    // Another host's optx renewed its lease a moment ago.
    let conn = rusqlite::Connection::open(e.store()).unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    conn.execute(
        "INSERT INTO sessions (command, pid, host, started_at, renewed_at, lease_seconds) VALUES ('optx run', 4242, 'elsewhere', ?1, ?1, 60)",
        [&now],
    )
    .unwrap();
    let out = e.optx(&["resume", "experiment.toml", "--max-trials", "3"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("in use by another optx (pid 4242 on elsewhere"), "{}", text(&out));
    // Its lease ran out long ago: it is dead, and the store can be taken over.
    conn.execute("UPDATE sessions SET renewed_at = '2026-01-01T00:00:00.000Z' WHERE pid = 4242", []).unwrap();
    e.run_ok(&["resume", "experiment.toml", "--max-trials", "3", "-q"]);
    assert_eq!(e.trials().len(), 3);
    let taken: i64 = conn
        .query_row("SELECT count(*) FROM sessions WHERE pid = 4242 AND taken_over IS NOT NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(taken, 1);
    let status = e.optx(&["status", "experiment.toml"]);
    assert!(text(&status).contains("pid 4242 on elsewhere"), "{}", text(&status));
    assert!(text(&status).contains("dead (its trials were taken over)"), "{}", text(&status));
    // Every trial names the worker that created it.
    assert!(e.trials().iter().all(|t| t["worker"].as_i64().is_some()));
}

#[test]
fn a_frozen_worker_loses_its_lease_and_stops_when_it_wakes_up() {
    let e = exp("frozen_worker", "0.4", 6, "worker_lease_seconds = 1");
    let old = e.spawn(&["run", "experiment.toml"], "old");
    e.wait_for(60, "a running trial", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 1);
    freeze(old.id());
    std::thread::sleep(Duration::from_millis(1500));
    // Silent past its lease: a resume takes its trials over and finishes the experiment.
    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("re-attached"), "{}", text(&out));
    signal(old.id(), "CONT");
    let mut old = old;
    let st = old.wait().unwrap();
    assert_eq!(st.code(), Some(1), "{}", e.log("old"));
    assert!(e.log("old").contains("lease on the store ran out"), "{}", e.log("old"));
    let trials = e.trials();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false).count(), 6, "{trials:?}");
    assert!(trials.iter().all(|t| status(t) == "COMPLETED" || t["lost"] == true), "{trials:?}");
    let arms: std::collections::HashSet<String> =
        trials.iter().filter(|t| status(t) == "COMPLETED").map(|t| t["parameters"].to_string()).collect();
    assert_eq!(arms.len(), 6, "no arm completed twice");
}

#[test]
fn four_workers_share_one_store_and_a_killed_one_is_taken_over() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let runner = format!(
        "command = [\"sh\", \"-c\", \"echo {{trial}} $PPID >> {}; sleep 0.3; echo f={{x}}\"]",
        log.path().display()
    );
    let orch = "max_trials = 40\nparallelism = 1\ninitial_seconds_between_polls = 0.05\nworker_lease_seconds = 3";
    let e = Exp::new("four", &toml("four", X, &runner, orch, "[generation]\nmethod = \"sobol\""));
    let mut workers: Vec<(usize, Spawned)> =
        (0..4).map(|i| (i, e.spawn(&["run", "experiment.toml", "--join"], &format!("w{i}")))).collect();
    // Kill one while it runs a trial.
    e.wait_for(60, "10 completed trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 10);
    let (_, mut victim) = workers.remove(1);
    let victim_pid = victim.id();
    e.wait_for(30, "the victim to run a trial", |e| {
        e.count(&format!(
            "SELECT count(*) FROM trials t JOIN sessions s ON s.id = t.holder WHERE s.pid = {victim_pid} AND t.status = 'RUNNING'"
        )) == 1
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (i, w) in workers.iter_mut() {
        let st = w.wait().unwrap();
        assert_eq!(st.code(), Some(0), "worker {i}: {}", e.log(&format!("w{i}")));
    }
    let trials = e.trials();
    // Each trial ran once, whoever started it.
    assert_exact_and_once(&trials, 40, log.path());
    let creators: std::collections::HashSet<i64> = trials.iter().filter_map(|t| t["worker"].as_i64()).collect();
    assert!(creators.len() >= 3, "the work was shared: {creators:?}");
    let taken = e.count(&format!("SELECT count(*) FROM sessions WHERE pid = {victim_pid} AND taken_over IS NOT NULL"));
    assert_eq!(taken, 1, "the dead worker was taken over");
    let adopted = (0..4)
        .filter(|i| *i != 1)
        .any(|i| e.log(&format!("w{i}")).contains("taking over 1 trial(s) that nobody follows"));
    assert!(adopted, "its running trial was taken over");
}

#[test]
fn a_worker_that_joins_with_another_file_is_refused_with_the_difference() {
    let e = exp("joinfile", "0", 2, "");
    e.run_ok(&["run", "experiment.toml", "--join", "-q"]);
    let changed =
        std::fs::read_to_string(e.path().join("experiment.toml")).unwrap().replace("[0.0, 1.0]", "[0.0, 2.0]");
    e.file("other.toml", &changed);
    let out = e.optx(&["run", "other.toml", "--join", "--store", ".optx/joinfile.db"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("[parameters] x:"), "{}", text(&out));
    // Orchestration may differ, but the budget is the experiment's (the store's), for every
    // worker: a joiner whose file says more creates nothing past it.
    let more =
        std::fs::read_to_string(e.path().join("experiment.toml")).unwrap().replace("max_trials = 2", "max_trials = 3");
    e.file("more.toml", &more);
    let out = e.run_ok(&["run", "more.toml", "--join", "--store", ".optx/joinfile.db"]);
    assert!(
        text(&out).contains("the experiment's budget is the one its store holds: max_trials = 2"),
        "{}",
        text(&out)
    );
    assert_eq!(e.trials().len(), 2);
}

#[test]
fn a_worker_capped_with_max_trials_per_worker_leaves_the_rest_to_the_next() {
    let e = exp("percap", "0", 3, "");
    e.run_ok(&["run", "experiment.toml", "--join", "--max-trials-per-worker", "1", "-q"]);
    assert_eq!(e.trials().len(), 1);
    e.run_ok(&["run", "experiment.toml", "--join", "-q"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 3);
    let creators: std::collections::HashSet<i64> = trials.iter().filter_map(|t| t["worker"].as_i64()).collect();
    assert_eq!(creators.len(), 2);
}

#[test]
fn ask_tell_and_attach_beside_a_running_optx_are_seen_by_its_next_proposals() {
    // Six arms and a budget of six: the run proposes only the arms that ask and attach left.
    let params = r#"c = { type = "choice", values = [1, 2, 3, 4, 5, 6] }"#;
    let runner = r#"command = ["sh", "-c", "sleep 0.5; echo f={c}"]"#;
    let orch = "max_trials = 6\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("asktell", &toml("asktell", params, runner, orch, "[generation]\nmethod = \"grid\""));
    let mut run = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "the run's first trial", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 1);
    let asked = e.run_ok(&["ask", ".optx/asktell.db", "--json"]);
    let a: serde_json::Value = serde_json::from_slice(&asked.stdout).unwrap();
    let index = a["index"].as_u64().unwrap().to_string();
    let out = e.run_ok(&["attach", "experiment.toml", "c=6", "--tell", "f=0.6"]);
    assert!(text(&out).contains("attached and completed"), "{}", text(&out));
    // A point of a learning curve first: without early stopping the answer is continue.
    let out = e.run_ok(&["tell", "experiment.toml", &index, "--progression", "1", "f=0.5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "continue");
    e.run_ok(&["tell", "experiment.toml", &index, "f=0.2:0.01"]);
    // Telling a trial that optx runs itself, or one that has ended, is refused.
    let out = e.optx(&["tell", "experiment.toml", "0", "f=1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let out = e.optx(&["tell", "experiment.toml", &index, "f=1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let out = e.optx(&["attach", "experiment.toml", "c=9"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(run.wait().unwrap().code(), Some(0), "{}", e.log("run"));
    let trials = e.trials();
    assert_eq!(trials.len(), 6, "the attached trial counts toward max_trials: {trials:?}");
    let mut values: Vec<i64> = trials.iter().map(|t| t["parameters"]["c"].as_i64().unwrap()).collect();
    values.sort();
    assert_eq!(values, [1, 2, 3, 4, 5, 6], "no arm twice: the run saw the asked and attached ones");
    let told = &trials[index.parse::<usize>().unwrap()];
    assert_eq!(status(told), "COMPLETED");
    assert_eq!(told["metrics"]["f"]["mean"].as_f64(), Some(0.2));
    assert_eq!(told["metrics"]["f"]["sem"].as_f64(), Some(0.01));
    let best = e.run_ok(&["best", "experiment.toml", "--json"]);
    let b: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap();
    assert_eq!(b["index"].as_u64(), told["index"].as_u64(), "the told value is the best");
}

#[test]
fn clean_settles_the_trials_of_a_dead_worker_and_a_dry_run_changes_nothing() {
    // Trial 0 sleeps long and is killed with optx and its shepherd; trial 1 ends on its
    // own later, leaving a result file but no exit status (its shepherd is gone).
    let runner = r#"command = ["sh", "-c", "if [ {trial} = 0 ]; then sleep 30; else sleep 1.5; fi; printf '{{\"f\": %s}}' {x} > \"$OPTX_RESULT_FILE\""]"#;
    let orch = "max_trials = 4\nparallelism = 2\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("clean", &toml("clean", X, runner, orch, "[generation]\nmethod = \"sobol\""));
    let optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "2 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 2);
    let shepherd = shepherd_of(optx.id());
    let first = process(&e.trial_dir(0)).0.unwrap();
    for p in [optx.id(), shepherd] {
        freeze(p);
    }
    signal_group(first, "KILL");
    for p in [shepherd, optx.id()] {
        signal(p, "KILL");
    }
    let mut optx = optx;
    optx.wait().unwrap();
    let dry = e.run_ok(&["clean", "experiment.toml", "--dry-run"]);
    let said = text(&dry);
    assert!(said.contains("is dead: it would be marked taken over"), "{said}");
    assert!(said.contains("trial 0: its process is gone"), "{said}");
    assert!(said.contains("trial 1 still runs"), "{said}");
    assert_eq!(e.count("SELECT count(*) FROM sessions WHERE taken_over IS NOT NULL"), 0, "a dry run changes nothing");
    e.wait_for(30, "trial 1 to end", |e| e.trial_dir(1).join("result.json").exists());
    std::thread::sleep(Duration::from_millis(300));
    let out = e.run_ok(&["clean", "experiment.toml"]);
    let said = text(&out);
    assert!(said.contains("trial 0: lost"), "{said}");
    assert!(said.contains("trial 1: COMPLETED"), "{said}");
    let trials = e.trials();
    assert_eq!(trials[1]["metrics"]["f"]["mean"], trials[1]["parameters"]["x"], "read from its result file");
    // The lost arm runs again on resume, and the budget is exact.
    e.run_ok(&["resume", "experiment.toml", "-q"]);
    let trials = e.trials();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false).count(), 4, "{trials:?}");
    assert!(trials.iter().any(|t| t["rerun_of"] == 0));
    let again = e.run_ok(&["clean", "experiment.toml"]);
    assert!(text(&again).contains("no trial is left without a worker"), "{}", text(&again));
}
