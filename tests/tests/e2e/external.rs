//! The external runner against a small fake queue (a script in the experiment dir that runs
//! each job as a detached process and answers for all jobs at once in its own words).

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

/// `queue.py submit DIR CMD...`, `queue.py status ID...`, `queue.py cancel ID`. Every call
/// is logged (one line: the verb and its ids) in queue/calls.log.
const QUEUE: &str = r#"import os, shlex, signal, subprocess, sys
Q = os.path.join(os.path.dirname(os.path.abspath(__file__)), "queue")
os.makedirs(Q, exist_ok=True)
verb, args = sys.argv[1], sys.argv[2:]
with open(os.path.join(Q, "calls.log"), "a") as log:
    log.write(verb + " " + " ".join(args if verb != "submit" else []) + "\n")
if verb == "submit":
    if os.environ.get("OPTX_PARAM_X") and float(os.environ["OPTX_PARAM_X"]) < 0:
        sys.exit("the queue is closed")
    n = 1
    while True:
        try:
            os.close(os.open(os.path.join(Q, f"job-{n}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    job, d = f"job-{n}", args[0]
    script = f"{shlex.join(args[1:])} > {d}/stdout.log 2> {d}/stderr.log; echo $? > {Q}/{job}.exit"
    p = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    open(os.path.join(Q, f"{job}.pid"), "w").write(str(p.pid))
    print(f"Submitted job {job} to the fake queue")
elif verb == "status":
    # A queue that is down for a while: its status command fails as often as fail_status says.
    flaky = os.path.join(Q, "..", "fail_status")
    if os.path.exists(flaky) and int(open(flaky).read() or 0) > 0:
        left = int(open(flaky).read())
        open(flaky, "w").write(str(left - 1))
        sys.exit("the queue is down")
    for j in args:
        if os.path.exists(os.path.join(Q, f"{j}.cancelled")):
            print(j, "KILLED", "by the user")
        elif not os.path.exists(os.path.join(Q, f"{j}.exit")):
            print(j, "BUSY")
        else:
            code = open(os.path.join(Q, f"{j}.exit")).read().strip()
            print(j, "FINI" if code == "0" else "KAPUT", "" if code == "0" else f"exit {code}")
elif verb == "cancel":
    open(os.path.join(Q, f"{args[0]}.cancelled"), "w").close()
    os.killpg(int(open(os.path.join(Q, f"{args[0]}.pid")).read()), signal.SIGTERM)
"#;

const TRIAL: &str = r#"import json, os, sys, time
x = float(sys.argv[1])
for step in (1, 2, 3):
    print(f"step={step} f={x * x + 1 / step}", flush=True)
    time.sleep(0.2)
if x > 0.8:
    sys.exit("x is too large for this trial")
json.dump({"f": x * x}, open(os.environ["OPTX_RESULT_FILE"], "w"))
"#;

const RUNNER: &str = r#"kind = "external"
submit = ["python3", "queue.py", "submit", "{trial_dir}", "python3", "trial.py", "{x}"]
job_id_regex = 'job (job-\d+)'
status_all = ["python3", "queue.py", "status", "{job_ids}"]
cancel = ["python3", "queue.py", "cancel", "{job_id}"]
status_map = { BUSY = "running", FINI = "completed", KAPUT = "failed", KILLED = "abandoned" }"#;

fn queue_exp(name: &str, params: &str, orch: &str) -> Exp {
    let orch = format!("{orch}\ninitial_seconds_between_polls = 0.1\nmax_seconds_between_polls = 0.5");
    let e = Exp::new(name, &toml(name, params, RUNNER, &orch, "[generation]\nmethod = \"sobol\""));
    e.file("queue.py", QUEUE).file("trial.py", TRIAL);
    e
}

#[test]
fn the_external_runner_follows_a_queue_with_one_status_call_for_all_its_jobs() {
    let e = queue_exp("q", X, "max_trials = 6\nparallelism = 3\ntolerated_trial_failure_rate = 1.0");
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let trials = e.trials();
    assert_eq!(trials.len(), 6);
    for t in &trials {
        let x = t["parameters"]["x"].as_f64().unwrap();
        if x > 0.8 {
            assert_eq!(status(t), "FAILED", "{t}");
            let reason = t["reason"].as_str().unwrap();
            assert!(reason.contains("(KAPUT): exit 1") && reason.contains("x is too large"), "{reason}");
        } else {
            assert_eq!(status(t), "COMPLETED", "{t}");
            assert!((metric(t, "f").unwrap() - x * x).abs() < 1e-9);
        }
    }
    // The learning curves came from stdout.log in the trial dirs.
    let points = e.count("SELECT count(*) FROM observations WHERE progression IS NOT NULL AND final = 0");
    assert!(points >= 6, "{points} points of learning curves");
    // They were read while the jobs ran, not only at their end.
    let early = e.count(
        "SELECT count(*) FROM observations o JOIN trials t ON o.trial = t.idx \
         WHERE o.progression IS NOT NULL AND o.final = 0 AND o.time < t.completed_at",
    );
    assert!(early >= 1, "no point of a learning curve arrived before its trial ended");
    // One status call per round asks about every live job.
    let calls = std::fs::read_to_string(e.path().join("queue/calls.log")).unwrap();
    let status: Vec<usize> =
        calls.lines().filter(|l| l.starts_with("status")).map(|l| l.split_whitespace().count() - 1).collect();
    assert!(status.iter().any(|n| *n >= 2), "a round asks about several jobs at once: {status:?}");
    assert_eq!(calls.lines().filter(|l| l.starts_with("submit")).count(), 6);
}

#[test]
fn a_status_command_that_fails_is_retried_and_fails_no_trial() {
    let e = queue_exp("qs", X, "max_trials = 2\nparallelism = 2");
    e.file("fail_status", "3");
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(e.path().join("fail_status")).unwrap(),
        "0",
        "the status command failed 3 times"
    );
    let trials = e.trials();
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
}

#[test]
fn a_submit_that_fails_is_a_failed_trial_with_its_stderr_and_optx_goes_on() {
    let params = r#"x = { type = "float", bounds = [-1.0, -0.5] }"#;
    let e = queue_exp("qf", params, "max_trials = 2\ntolerated_trial_failure_rate = 1.0");
    let out = e.optx(&["run", "experiment.toml"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let trials = e.trials();
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(status(t), "FAILED");
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.contains("the submit command failed (exit 1: the queue is closed)"), "{reason}");
    }
}

#[test]
fn a_second_interrupt_cancels_external_jobs_and_records_them_lost() {
    let e = queue_exp("qc", X, "max_trials = 2\nparallelism = 2");
    e.file("trial.py", "import time\ntime.sleep(60)\n");
    let run = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "two jobs running", |e| {
        e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING' AND run_metadata IS NOT NULL") == 2
    });
    signal(run.id(), "INT");
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(run.id(), "INT");
    let out = output_within_spawned(run);
    assert_eq!(out, Some(130), "{}", e.log("run"));
    let trials = e.trials();
    assert!(trials.iter().all(|t| status(t) == "FAILED" && t["lost"] == true), "{trials:?}");
    let calls = std::fs::read_to_string(e.path().join("queue/calls.log")).unwrap();
    assert_eq!(calls.lines().filter(|l| l.starts_with("cancel")).count(), 2, "{calls}");
}

/// The exit code of a spawned optx, waited for at most a minute.
fn output_within_spawned(mut s: Spawned) -> Option<i32> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = s.try_wait().unwrap() {
            return st.code();
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
