//! A trial dir belongs to exactly one trial of one store: a new store never reads or
//! overwrites the dirs of an old one, `--fresh` keeps the old run's processes and records
//! apart, and backup names never collide.

use std::collections::HashSet;

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|d| d.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

/// The tokens (`store:trial`) of every record line in a trial dir's process.jsonl.
fn tokens(dir: &std::path::Path) -> HashSet<String> {
    std::fs::read_to_string(dir.join("process.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["token"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_new_store_never_reads_or_overwrites_the_trial_dirs_of_an_old_one() {
    // The first experiment's trials leave a result file saying f = 999.
    let old =
        r#"command = ["sh", "-c", "echo old output of trial {trial}; echo '{{\"f\": 999}}' > \"$OPTX_RESULT_FILE\""]"#;
    let e = Exp::new("dirs", &toml("dirs", X, old, "max_trials = 3", ""));
    e.run_ok(&["run", "experiment.toml", "-q"]);
    assert!(e.trials().iter().all(|t| metric(t, "f") == Some(999.0)));
    // The store goes (deleted, then emptied), the script changes, and optx is told to
    // start it anew.
    let new = r#"command = ["sh", "-c", "echo f={x}"]"#;
    e.file("experiment.toml", &toml("dirs", X, new, "max_trials = 3", ""));
    for how in ["deleted", "emptied"] {
        match how {
            "deleted" => std::fs::remove_file(e.store()).unwrap(),
            _ => std::fs::write(e.store(), b"").unwrap(),
        }
        let out = e.run_ok(&["run", "experiment.toml"]);
        assert!(text(&out).contains("held the trial dirs of another store; set aside"), "{how}: {}", text(&out));
        for t in e.trials() {
            assert_eq!(status(&t), "COMPLETED", "{how}: {t}");
            assert_eq!(metric(&t, "f"), t["parameters"]["x"].as_f64(), "{how}: a new trial read an old result: {t}");
        }
    }
    // The first run's output is kept, set aside, not overwritten.
    let dot = e.path().join(".optx");
    let aside: Vec<String> = names(&dot).into_iter().filter(|n| n.starts_with("dirs.trials.old-")).collect();
    assert_eq!(aside.len(), 2, "{:?}", names(&dot));
    let kept = aside.iter().any(|a| {
        std::fs::read_to_string(dot.join(a).join("0").join("stdout.log")).is_ok_and(|s| s.contains("old output"))
    });
    assert!(kept, "the old stdout.log files are kept: {aside:?}");
}

#[test]
fn run_fresh_after_a_kill_9_stops_the_old_trials_and_keeps_their_records_apart() {
    let slow = r#"command = ["sh", "-c", "sleep 30; echo f={x}"]
stop_grace = "1s""#;
    let orch = "max_trials = 4\nparallelism = 2\ninitial_seconds_between_polls = 0.1";
    let e = Exp::new("fresh9", &toml("fresh9", X, slow, orch, ""));
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "2 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 2);
    let old_pids: Vec<u32> = (0..2).filter_map(|i| process(&e.trial_dir(i)).0).collect();
    assert_eq!(old_pids.len(), 2);
    optx.kill().unwrap();
    optx.wait().unwrap();
    assert!(old_pids.iter().all(|p| alive(*p as i32)), "the old trials outlive optx");

    let fast = r#"command = ["sh", "-c", "sleep 0.3; echo f={x}"]"#;
    e.file("experiment.toml", &toml("fresh9", X, fast, orch, ""));
    let out = e.run_ok(&["run", "experiment.toml", "--fresh"]);
    assert!(text(&out).contains("--fresh: stopping 2 trial(s) of the old run"), "{}", text(&out));
    e.wait_for(10, "the old trials to be gone", |_| old_pids.iter().all(|p| !alive(*p as i32)));
    let trials = e.trials();
    assert_eq!(trials.len(), 4);
    let mut new_tokens = HashSet::new();
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        assert_eq!(metric(t, "f"), t["parameters"]["x"].as_f64());
        let i = t["index"].as_u64().unwrap();
        let tok = tokens(&e.trial_dir(i));
        assert_eq!(tok.len(), 1, "trial {i}'s records are its own only: {tok:?}");
        new_tokens.extend(tok);
    }
    // The old trials' ends were recorded in their own dirs, set aside with the old store.
    let dot = e.path().join(".optx");
    let old_root = names(&dot).into_iter().find(|n| n.starts_with("fresh9.trials.bak-")).expect("old trial dirs");
    for i in 0..2 {
        let dir = dot.join(&old_root).join(i.to_string());
        e.wait_for(10, "the old shepherd to record the end", |_| process(&dir).1.is_some());
        assert!(tokens(&dir).is_disjoint(&new_tokens), "old and new records never mix");
    }
    let old_db = names(&dot).into_iter().find(|n| n.starts_with("fresh9.db.bak-")).expect("old store");
    let conn = rusqlite::Connection::open(dot.join(old_db)).unwrap();
    let lost: i64 = conn
        .query_row(
            "SELECT count(*) FROM trials WHERE status = 'FAILED' AND lost = 1 AND reason LIKE '%--fresh%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lost, 2, "the old store says what became of its running trials");
}

#[test]
fn fresh_twice_within_a_second_keeps_both_backups_whole() {
    let e = Exp::new("twice", &toml("twice", X, r#"command = ["sh", "-c", "echo f={x}"]"#, "max_trials = 3", ""));
    e.run_ok(&["run", "experiment.toml", "-q"]);
    e.run_ok(&["run", "experiment.toml", "-q", "--fresh"]);
    e.run_ok(&["run", "experiment.toml", "-q", "--fresh", "--max-trials", "2"]);
    let dot = e.path().join(".optx");
    let dbs: Vec<String> = names(&dot).into_iter().filter(|n| n.starts_with("twice.db.bak-")).collect();
    let roots: Vec<String> = names(&dot).into_iter().filter(|n| n.starts_with("twice.trials.bak-")).collect();
    assert_eq!((dbs.len(), roots.len()), (2, 2), "{:?}", names(&dot));
    for db in &dbs {
        let conn = rusqlite::Connection::open(dot.join(db)).unwrap();
        let n: i64 =
            conn.query_row("SELECT count(*) FROM trials WHERE status = 'COMPLETED'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3, "{db} is a whole store");
    }
    for root in &roots {
        assert_eq!(names(&dot.join(root)).iter().filter(|n| !n.starts_with('.')).count(), 3, "{root}");
    }
    assert_eq!(e.trials().len(), 2);
}
