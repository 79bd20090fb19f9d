//! The slurm runner on a real single-node Slurm (`SLURM_CONF`, started by scripts/test.sh
//! with scripts/slurm-local.sh): jobs to completion, a job that fails, optx killed while its
//! jobs run, --detach, a submit Slurm refuses, and a job cancelled by hand. Slurm's own
//! records (`scontrol show job`) count the submissions.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

/// A trial that reports two points of a learning curve, sleeps, then exits with `code`
/// (writing its result file only on success).
const TRIAL: &str = r#"import json, os, sys, time
x, sleep, code = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
for step in (1, 2):
    print(f"step={step} f={x * x + step}", flush=True)
time.sleep(sleep)
if code:
    print("boom", file=sys.stderr)
    sys.exit(code)
json.dump({"f": x * x}, open(os.environ["OPTX_RESULT_FILE"], "w"))
"#;

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF")
        .expect("SLURM_CONF is not set: run the tests with scripts/test.sh, which starts a single-node Slurm for them")
}

fn on_slurm(name: &str, sleep: f64, code: i32, extra_runner: &str, orch: &str) -> Exp {
    slurm_conf();
    let runner = format!(
        "kind = \"slurm\"\ncommand = [\"python3\", \"trial.py\", \"{{x}}\", \"{sleep}\", \"{code}\"]\n{extra_runner}"
    );
    let orch = format!("{orch}\ninitial_seconds_between_polls = 0.2\nmax_seconds_between_polls = 1");
    let e = Exp::new(name, &toml(name, X, &runner, &orch, "[generation]\nmethod = \"sobol\""));
    e.file("trial.py", TRIAL);
    e
}

/// The jobs of this experiment that Slurm has a record of (by their output files).
fn jobs_in_slurm(e: &Exp) -> usize {
    let out = Command::new("scontrol").args(["-o", "show", "job"]).output().expect("scontrol");
    let dir = e.path().to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&format!("StdOut={dir}/"))).count()
}

fn running_with_job_ids(e: &Exp) -> i64 {
    e.count(
        "SELECT count(*) FROM trials WHERE status = 'RUNNING' AND json_extract(run_metadata, '$.job_id') IS NOT NULL",
    )
}

#[test]
fn trials_run_as_slurm_jobs_to_completion_at_parallelism_2() {
    let e = on_slurm("s_done", 0.3, 0, "", "max_trials = 4\nparallelism = 2");
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 4);
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
    // The job's output went into its trial dir, and its learning curve into the store.
    let out = std::fs::read_to_string(e.trial_dir(0).join("stdout.log")).unwrap();
    assert!(out.contains("step=2"), "{out}");
    assert!(e.count("SELECT count(*) FROM observations WHERE progression IS NOT NULL") >= 4);
    assert_eq!(jobs_in_slurm(&e), 4, "one job per trial");
}

#[test]
fn a_job_that_exits_3_fails_its_trial_with_the_exit_code_and_stderr() {
    let e = on_slurm("s_exit", 0.0, 3, "", "max_trials = 1");
    e.optx(&["run", "experiment.toml"]);
    let t = &e.trials()[0];
    assert_eq!(status(t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("FAILED (exit code 3)") && reason.contains("boom"), "{reason}");
    assert_eq!(t["lost"], false);
}

#[test]
fn jobs_outlive_a_kill_9_of_optx_and_a_resume_collects_them_without_submitting_again() {
    let e = on_slurm("s_kill", 3.0, 0, "", "max_trials = 2\nparallelism = 2");
    let mut run = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "two jobs running", |e| running_with_job_ids(e) == 2);
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(jobs_in_slurm(&e), 2);
    let out = e.run_ok(&["resume", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 2, "{}", text(&out));
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
    assert_eq!(jobs_in_slurm(&e), 2, "none submitted twice");
}

#[test]
fn run_detach_submits_up_to_parallelism_and_a_later_resume_collects_and_goes_on() {
    let e = on_slurm("s_detach", 1.0, 0, "", "max_trials = 3\nparallelism = 2");
    let out = e.run_ok(&["run", "experiment.toml", "--detach"]);
    assert!(text(&out).contains("detached: 2 trial(s)"), "{}", text(&out));
    assert_eq!(running_with_job_ids(&e), 2);
    e.run_ok(&["resume", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 3);
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
    assert_eq!(jobs_in_slurm(&e), 3);
    // Only runners whose jobs outlive optx detach.
    let local = Exp::new("local", &toml("local", X, "command = \"true\"", "max_trials = 1", ""));
    let out = local.optx(&["run", "experiment.toml", "--detach"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("--detach needs a runner whose jobs outlive optx"), "{}", text(&out));
}

#[test]
fn a_submission_slurm_refuses_is_a_failed_trial_with_sbatchs_message() {
    let e = on_slurm("s_refused", 0.0, 0, "sbatch_args = [\"--no-such-option\"]", "max_trials = 1");
    let out = e.optx(&["run", "experiment.toml"]);
    assert_ne!(code(&out), 2, "{}", text(&out));
    let t = &e.trials()[0];
    assert_eq!(status(t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains("sbatch refused the job") && reason.contains("no-such-option"), "{reason}");
}

#[test]
fn a_job_cancelled_by_hand_fails_its_trial_with_that_reason() {
    let e = on_slurm("s_scancel", 60.0, 0, "", "max_trials = 1");
    let mut run = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "the job running", |e| running_with_job_ids(e) == 1);
    let conn = rusqlite::Connection::open_with_flags(e.store(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let id: String = conn
        .query_row("SELECT json_extract(run_metadata, '$.job_id') FROM trials WHERE idx = 0", [], |r| r.get(0))
        .unwrap();
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < end, "optx did not notice the cancel: {}", e.log("run"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = &e.trials()[0];
    assert_eq!(status(t), "FAILED");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("Slurm job {id} was CANCELLED outside optx")), "{reason}");
}

#[test]
fn run_trials_in_batches_submits_one_job_array() {
    let e = on_slurm("s_array", 0.2, 0, "", "max_trials = 3\nparallelism = 3\nrun_trials_in_batches = true");
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
    let conn = rusqlite::Connection::open_with_flags(e.store(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut q = conn.prepare("SELECT json_extract(run_metadata, '$.job_id') FROM trials ORDER BY idx").unwrap();
    let ids: Vec<String> = q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    // The first batch is one array whose task ids are the trial indices.
    let array = ids[0].split('_').next().unwrap().to_string();
    assert!(ids.iter().enumerate().all(|(i, id)| *id == format!("{array}_{i}")), "{ids:?}");
    assert!(std::fs::read_to_string(e.trial_dir(2).join("stdout.log")).unwrap().contains("step=2"));
}
