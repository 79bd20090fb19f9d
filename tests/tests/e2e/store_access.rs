//! Opening a store: two runs at once, readers beside writers, a copy of a live store,
//! and stores that cannot be used (read-only, damaged, empty).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

fn quick(name: &str, max_trials: u32) -> Exp {
    let orch = format!("max_trials = {max_trials}\nparallelism = 2\ninitial_seconds_between_polls = 0");
    Exp::new(name, &toml(name, X, r#"command = ["sh", "-c", "echo f={x}"]"#, &orch, "[generation]\nmethod = \"sobol\""))
}

#[test]
fn two_runs_started_at_once_on_a_new_store_agree_on_one_owner() {
    for round in 0..8 {
        let e = Exp::new(
            "race",
            &toml("race", X, r#"command = ["sh", "-c", "sleep 0.3; echo f={x}"]"#, "max_trials = 2", ""),
        );
        let a = e.spawn(&["run", "experiment.toml", "-q"], "a");
        let b = e.spawn(&["run", "experiment.toml", "-q"], "b");
        let codes = [a, b].map(|mut c| c.wait().unwrap().code());
        let (la, lb) = (e.log("a"), e.log("b"));
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(2)], "round {round}: one runs, the other is refused:\n{la}\n---\n{lb}");
        let loser = if codes[0] == Some(2) { la } else { lb };
        assert!(
            loser.contains("is in use by another optx (pid") || loser.contains("already holds the experiment"),
            "round {round}: the refusal names the owner: {loser}"
        );
        assert!(!loser.contains("database is locked"), "{loser}");
        assert_eq!(e.trials().len(), 2);
    }
}

#[test]
fn a_reader_beside_a_writer_frozen_while_it_opens_answers_at_once() {
    for round in 0..12 {
        let e = quick("frozen_open", 3);
        let w = e.spawn(&["run", "experiment.toml", "-q"], "w");
        // Freeze the writer at some moment of its start.
        std::thread::sleep(Duration::from_millis(round * 4));
        signal(w.id(), "STOP");
        let start = Instant::now();
        let out = e.optx(&["status", ".optx/frozen_open.db"]);
        let took = start.elapsed();
        signal(w.id(), "CONT");
        let mut w = w;
        w.wait().unwrap();
        assert!(took < Duration::from_secs(3), "round {round}: status waited {took:?}: {}", text(&out));
        assert!(!text(&out).contains("locked"), "round {round}: {}", text(&out));
        assert!([0, 2].contains(&code(&out)), "round {round}: {}", text(&out));
    }
}

#[test]
fn backup_copies_a_store_after_a_kill_9_with_what_only_its_wal_holds() {
    let e = quick("copy", 3000);
    let mut optx = e.spawn(&["run", "experiment.toml", "-q"], "run");
    e.wait_for(60, "200 trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 200);
    // A copy while it runs.
    let live = e.optx(&["backup", ".optx/copy.db", "live.db"]);
    assert_eq!(code(&live), 0, "{}", text(&live));
    optx.kill().unwrap();
    optx.wait().unwrap();
    let wal = e.path().join(".optx/copy.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0, "the WAL holds the recent commits");
    let out = e.optx(&["backup", ".optx/copy.db", "copy.db"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("copied"), "{}", text(&out));
    let trials = |store: &str| {
        let out = e.optx(&["trials", store, "--format", "json"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let (orig, copy, during) = (trials(".optx/copy.db"), trials("copy.db"), trials("live.db"));
    assert_eq!(orig, copy, "the copy holds everything");
    assert!(during.len() >= 200 && during.len() <= orig.len());
    // An existing file is never overwritten.
    let again = e.optx(&["backup", ".optx/copy.db", "copy.db"]);
    assert_eq!(code(&again), 2, "{}", text(&again));
    assert_eq!(trials("copy.db"), orig);
}

#[test]
fn a_store_that_cannot_be_written_can_still_be_read() {
    let e = quick("ro", 4);
    e.run_ok(&["run", "experiment.toml", "-q"]);
    let dot = e.path().join(".optx");
    // Another user who may read but not write the store or its directory. The binary is
    // copied beside the experiment: the checkout may be in a directory that user cannot enter.
    let bin = e.path().join("optx-for-reader");
    std::fs::copy(optx_bin(), &bin).unwrap();
    let as_reader = |args: &[&str]| {
        let mut c = if rustix::process::geteuid().is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        c.args(args).current_dir(e.path()).output().unwrap()
    };
    let chmod = |mode: &str| {
        let ok = Command::new("chmod").args(["-R", mode]).arg(&dot).status().unwrap();
        assert!(ok.success());
    };
    chmod("a-w");
    std::fs::set_permissions(e.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let status = as_reader(&["status", ".optx/ro.db"]);
    let trials = as_reader(&["trials", ".optx/ro.db", "--format", "json"]);
    let resume = as_reader(&["resume", ".optx/ro.db", "--max-trials", "5"]);
    chmod("u+w");
    assert_eq!(code(&status), 0, "{}", text(&status));
    assert!(text(&status).contains("4 of 4 trials: 4 completed"), "{}", text(&status));
    assert_eq!(code(&trials), 0, "{}", text(&trials));
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&trials.stdout).unwrap().len(), 4);
    assert_eq!(code(&resume), 2, "writing is refused as bad input: {}", text(&resume));
    assert_eq!(e.trials().len(), 4);
}

#[test]
fn a_damaged_or_empty_store_is_named_with_advice_that_fits() {
    let e = quick("bad", 2);
    e.run_ok(&["run", "experiment.toml", "-q"]);
    std::fs::write(e.store(), "this is not a database, it was overwritten by mistake\n".repeat(200)).unwrap();
    for args in [&["status", ".optx/bad.db"][..], &["resume", ".optx/bad.db"], &["run", "experiment.toml"]] {
        let out = e.optx(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let msg = text(&out);
        assert!(msg.contains("is not an optx store, or it is damaged"), "{args:?}: {msg}");
        assert!(!msg.contains("start it with `optx run`"), "{args:?}: {msg}");
    }
    std::fs::write(e.store(), b"").unwrap();
    for args in [&["status", ".optx/bad.db"][..], &["resume", ".optx/bad.db"]] {
        let out = e.optx(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        assert!(text(&out).contains("is empty: it holds no experiment"), "{args:?}: {}", text(&out));
    }
    // A directory where the store should be.
    let d = quick("dir", 2);
    std::fs::create_dir_all(d.store()).unwrap();
    let out = d.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("is a directory, not a store"), "{}", text(&out));
}
