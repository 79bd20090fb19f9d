//! Interrupts: the first drains, the second stops the trials (lost), exit 130.

use crate::common::*;

fn exp(name: &str, sleep: &str, max: u32) -> Exp {
    let runner = format!("command = [\"sh\", \"-c\", \"sleep {sleep}; echo f={{x}}\"]\nstop_grace = \"2s\"");
    let orch = format!("max_trials = {max}\nparallelism = 2\ninitial_seconds_between_polls = 0.1");
    Exp::new(name, &toml(name, r#"x = { type = "float", bounds = [0.0, 1.0] }"#, &runner, &orch, ""))
}

#[test]
fn a_first_interrupt_lets_running_trials_finish_then_exits_130() {
    for sig in ["INT", "TERM"] {
        let e = exp("drain", "1.5", 8);
        let mut optx = e.spawn(&["run", "experiment.toml"], "run");
        e.wait_for(60, "2 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 2);
        signal(optx.id(), sig);
        let st = optx.wait().unwrap();
        assert_eq!(st.code(), Some(130), "{}", e.log("run"));
        assert!(e.log("run").contains("waiting for 2 running trial(s)"), "{}", e.log("run"));
        let trials = e.trials();
        assert_eq!(trials.len(), 2, "nothing more was deployed");
        assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "they finished: {trials:?}");
        e.run_ok(&["resume", "experiment.toml", "-q"]);
        assert_eq!(e.trials().len(), 8);
    }
}

#[test]
fn a_second_interrupt_stops_the_trials_and_they_run_again_on_resume() {
    let e = exp("stop", "30", 4);
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "2 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 2);
    signal(optx.id(), "INT");
    e.wait_for(10, "the first interrupt to be seen", |e| e.log("run").contains("interrupted"));
    signal(optx.id(), "INT");
    let st = optx.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{}", e.log("run"));
    let trials = e.trials();
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(status(t), "FAILED");
        assert_eq!(t["lost"], true, "{t}");
        assert!(t["reason"].as_str().unwrap().contains("second interrupt"), "{t}");
        let pid = process(&e.trial_dir(t["index"].as_u64().unwrap())).0.expect("a recorded pid");
        assert!(!alive(pid as i32), "the trial process is gone");
    }
    // Resume with short trials: the lost arms run again, and 4 trials that are not lost end.
    let text_ = std::fs::read_to_string(e.path().join("experiment.toml")).unwrap().replace("sleep 30", "sleep 0");
    e.file("experiment.toml", &text_);
    e.run_ok(&["resume", "experiment.toml", "--allow-changes", "-q"]);
    let trials = e.trials();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false).count(), 4);
    assert_eq!(trials.iter().filter(|t| t["generation"] == "rerun").count(), 2);
}
