//! Plugins: the example experiments through the real .so files, a plugin written in C,
//! misbehaving plugins, load errors, and resume with plugin trials running at a kill -9.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The test functions, written again here from their definitions (not the plugins' code).
fn hartmann6(x: &[f64]) -> f64 {
    let alpha = [1.0, 1.2, 3.0, 3.2];
    let a = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    let p = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| alpha[i] * (-(0..6).map(|j| a[i][j] * (x[j] - p[i][j] * 1e-4).powi(2)).sum::<f64>()).exp())
        .sum::<f64>()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn branin(x1: f64, x2: f64) -> f64 {
    let pi = std::f64::consts::PI;
    (x2 - 5.1 / (4.0 * pi * pi) * x1 * x1 + 5.0 / pi * x1 - 6.0).powi(2)
        + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * x1.cos()
        + 10.0
}

/// A plugin library built by `cargo build --workspace`, beside the optx binary.
fn lib(name: &str) -> PathBuf {
    let p = optx_bin().parent().unwrap().join(format!("liboptx_{name}.so"));
    assert!(p.is_file(), "{} is missing: run `cargo build --workspace` before the tests", p.display());
    p
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// An experiment on the hartmann6 plugin: its runner, each trial taking `delay` seconds,
/// and with `metric` its `hartmann6` metric.
fn h6_plugin(name: &str, delay: f64, orchestration: &str, metric: bool) -> String {
    let so = lib("hartmann6");
    let runner = format!(
        "kind = \"plugin\"\nlibrary = \"{}\"\nname = \"hartmann6\"\nconfig = {{ delay_seconds = {delay} }}",
        so.display()
    );
    let params: Vec<String> = (1..=6).map(|i| format!("x{i} = {{ type = \"float\", bounds = [0.0, 1.0] }}")).collect();
    let metrics = match metric {
        true => format!("[metrics.hartmann6]\nplugin = {{ library = \"{}\", name = \"hartmann6\" }}", so.display()),
        false => String::new(),
    };
    toml(name, &params.join("\n"), &runner, orchestration, &metrics)
        .replace("minimize = \"f\"", "minimize = \"hartmann6\"")
}

/// `(status, lost, stop metadata)` of every trial, from the store.
fn stops(e: &Exp) -> Vec<(String, bool, String)> {
    let conn = rusqlite::Connection::open(e.store()).unwrap();
    let mut q = conn.prepare("SELECT status, lost, stop_metadata FROM trials ORDER BY idx").unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default())))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Build the C plugin into `dir` with `cc`, with extra `-D` definitions.
fn c_plugin(dir: &Path, out: &str, defines: &[&str]) -> PathBuf {
    let so = dir.join(out);
    let mut cc = Command::new("cc");
    cc.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(repo().join("plugin-api/include"))
        .arg("-o")
        .arg(&so)
        .arg(repo().join("plugins/c-sphere/sphere.c"));
    for d in defines {
        cc.arg(format!("-D{d}"));
    }
    let o = cc.output().expect("run cc");
    assert!(o.status.success(), "cc failed: {}", text(&o));
    so
}

/// An example experiment from experiments/, with its libraries where this build put them.
fn example(file: &str, edit: impl Fn(String) -> String) -> Exp {
    let text = std::fs::read_to_string(repo().join("experiments").join(file)).unwrap();
    let dir = optx_bin().parent().unwrap().to_string_lossy().into_owned();
    let text = edit(text.replace("../target/debug", &dir));
    let name = text.lines().find_map(|l| l.strip_prefix("name = \"")).unwrap().trim_end_matches('"').to_string();
    Exp::new(&name, &text)
}

#[test]
fn the_hartmann6_plugin_example_runs_to_completion() {
    let e = example("hartmann6_plugin.toml", |t| {
        t.replace("delay_seconds = 5", "delay_seconds = 0")
            .replace("initial_seconds_between_polls = 1", "initial_seconds_between_polls = 0.05")
    });
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 30);
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        let p = &t["parameters"];
        let x: Vec<f64> = (1..=6).map(|i| p[format!("x{i}")].as_f64().unwrap()).collect();
        let want = hartmann6(&x);
        assert!(close(metric(t, "hartmann6").unwrap(), want), "the metric reads the value the runner computed: {t}");
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((metric(t, "l2norm").unwrap() - norm).abs() < 1e-12);
        assert_eq!(t["feasible"], norm <= 1.25);
        assert!(e.trial_dir(t["index"].as_u64().unwrap()).join("hartmann6.json").is_file());
    }
    let best = e.optx(&["best", "experiment.toml", "--json"]);
    assert!(text(&best).contains("hartmann6"), "{}", text(&best));
}

#[test]
fn an_installed_optx_finds_a_plugin_named_without_a_directory_along_optx_plugin_path() {
    let e = example("hartmann6_plugin.toml", |t| t.replace("delay_seconds = 5", "delay_seconds = 0"));
    // optx installed elsewhere: the plugins are not beside it.
    let bin = tempfile::tempdir().unwrap();
    let installed = bin.path().join("optx");
    std::fs::copy(optx_bin(), &installed).unwrap();
    let validate = |path: Option<&Path>| {
        let mut c = Command::new(&installed);
        c.args(["validate", "experiment.toml"]).current_dir(e.path()).env_remove("OPTX_PLUGIN_PATH");
        if let Some(p) = path {
            c.env("OPTX_PLUGIN_PATH", p);
        }
        output_within(c, std::time::Duration::from_secs(60))
    };
    let out = validate(None);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("the plugin library `optx_hartmann6` is in none of"), "{}", text(&out));
    assert!(text(&out).contains("OPTX_PLUGIN_PATH"), "{}", text(&out));
    let built = optx_bin().parent().unwrap().to_path_buf();
    let out = validate(Some(&built));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("hartmann6"), "{}", text(&out));
}

#[test]
fn the_job_queue_example_polls_every_job_in_one_call() {
    let e = example("branin_queue.toml", |t| {
        t.replace("initial_seconds_between_polls = 0.2", "initial_seconds_between_polls = 0.02")
    });
    let out = e.cmd(&["run", "experiment.toml"]).env("RUST_LOG", "optx=debug").output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let trials = e.trials();
    assert_eq!(trials.len(), 20);
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        let (x1, x2) = (t["parameters"]["x1"].as_f64().unwrap(), t["parameters"]["x2"].as_f64().unwrap());
        assert!(close(metric(t, "branin").unwrap(), branin(x1, x2)), "{t}");
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("poll_trials: one call for every running trial"), "batch polls were used: {log}");
    assert!(!log.contains("poll_trial failed"), "{log}");
    // Jobs got ids from the queue, kept as run metadata.
    let conn = rusqlite::Connection::open(e.store()).unwrap();
    let jobs: i64 = conn
        .query_row("SELECT count(DISTINCT json_extract(run_metadata, '$.job_id')) FROM trials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 20);
}

#[test]
fn run_trials_in_batches_deploys_the_ready_trials_in_one_call() {
    let e = example("branin_queue.toml", |t| {
        t.replace(
            "initial_seconds_between_polls = 0.2",
            "initial_seconds_between_polls = 0.02\nrun_trials_in_batches = true",
        )
        .replace("max_jobs = 10", "max_jobs = 3")
    });
    let out = e.cmd(&["run", "experiment.toml"]).env("RUST_LOG", "optx=debug").output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let trials = e.trials();
    assert_eq!(trials.len(), 20);
    assert!(trials.iter().all(|t| status(t) == "COMPLETED"), "{trials:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    let sizes: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("run_trials: one call deploys them all"))
        .filter_map(|l| l.split("trials=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    assert!(!sizes.is_empty(), "{log}");
    assert_eq!(sizes.iter().sum::<usize>(), 20, "every trial deployed through run_trials: {sizes:?}");
    assert_eq!(sizes[0], 3, "the first batch: as many as the queue had room for (max_jobs = 3), not parallelism 4");
    assert!(sizes.iter().all(|n| *n <= 3), "{sizes:?}");
}

#[test]
fn run_trials_in_batches_is_refused_for_the_command_runner() {
    let e = Exp::new("b", &toml("b", XY, "command = \"true\"", "max_trials = 2\nrun_trials_in_batches = true", ""));
    let out = e.optx(&["validate", "experiment.toml"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out).contains(
            "experiment.toml:17:1: `orchestration.run_trials_in_batches` needs a runner that deploys in batches"
        ),
        "{}",
        text(&out)
    );
}

const XY: &str = r#"x = { type = "float", bounds = [-1.0, 1.0] }
y = { type = "float", bounds = [-1.0, 1.0] }"#;

#[test]
fn a_plugin_written_in_c_runs_trials() {
    let dir = tempfile::tempdir().unwrap();
    let so = c_plugin(dir.path(), "libsphere.so", &[]);
    let runner = format!("kind = \"plugin\"\nlibrary = \"{}\"\nname = \"sphere\"", so.display());
    let metrics = format!("[metrics.f]\nplugin = {{ library = \"{}\", name = \"f\" }}", so.display());
    let e = Exp::new(
        "c",
        &toml("c", XY, &runner, "max_trials = 12\nparallelism = 3\ninitial_seconds_between_polls = 0", &metrics),
    );
    let v = e.run_ok(&["validate", "experiment.toml"]);
    assert!(text(&v).contains("c-sphere 1.0.0 (ABI 1.0)"), "{}", text(&v));
    e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert_eq!(trials.len(), 12);
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        let (x, y) = (t["parameters"]["x"].as_f64().unwrap(), t["parameters"]["y"].as_f64().unwrap());
        assert!((metric(t, "f").unwrap() - (x * x + y * y)).abs() < 1e-12, "{t}");
    }
}

#[test]
fn each_misbehaviour_fails_its_trial_with_a_reason_and_optx_goes_on() {
    let modes = ["ok", "panic", "not_object", "bad_json", "other_trial", "hang", "fetch_error"];
    let params = format!(
        "mode = {{ type = \"choice\", values = [{}] }}\nx = {{ type = \"fixed\", value = 0.25 }}",
        modes.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ")
    );
    let so = lib("misbehave");
    let runner =
        format!("kind = \"plugin\"\nlibrary = \"{}\"\nname = \"misbehave\"\ncall_timeout = \"1s\"", so.display());
    let metrics = format!(
        "[metrics.f]\nplugin = {{ library = \"{}\", name = \"value\" }}\n\n[generation]\nmethod = \"grid\"",
        so.display()
    );
    // One trial at a time: the worker stuck in the hung call must be replaced for the run to go on.
    let orch =
        "max_trials = 7\nparallelism = 1\ninitial_seconds_between_polls = 0.05\ntolerated_trial_failure_rate = 1.0";
    let e = Exp::new("bad", &toml("bad", &params, &runner, orch, &metrics));
    let start = std::time::Instant::now();
    let out = e.run_ok(&["run", "experiment.toml"]);
    assert!(start.elapsed().as_secs() < 30, "the hung call was left behind, not waited for");
    let trials = e.trials();
    assert_eq!(trials.len(), 7, "{}", text(&out));
    let expect = [
        ("panic", "panicked: misbehave: a panic in run_trial"),
        ("not_object", "run_trial must answer a JSON object"),
        ("bad_json", "answer to poll_trial is not what the ABI expects"),
        ("other_trial", "answered about trial"),
        ("hang", "did not return within call_timeout (1s)"),
        ("fetch_error", "the metric's database refused the query"),
    ];
    for t in &trials {
        let mode = t["parameters"]["mode"].as_str().unwrap();
        if mode == "ok" {
            assert_eq!(status(t), "COMPLETED", "{t}");
            assert_eq!(metric(t, "f"), Some(0.25));
            continue;
        }
        let (_, want) = expect.iter().find(|(m, _)| *m == mode).unwrap();
        // A metric that cannot be fetched says nothing about the arm: abandoned, as Ax does.
        let expected = if mode == "fetch_error" { "ABANDONED" } else { "FAILED" };
        assert_eq!(status(t), expected, "{t}");
        let reason = t["reason"].as_str().unwrap_or("");
        assert!(reason.contains(want), "{mode}: {reason}");
    }
}

#[test]
fn a_library_that_cannot_be_a_plugin_is_refused_with_exit_2_before_any_trial() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, b"\x7fELF but not really a library").unwrap();
    let no_entry = c_plugin(dir.path(), "libnoentry.so", &["SPHERE_NO_ENTRY"]);
    let abi2 = c_plugin(dir.path(), "libabi2.so", &["SPHERE_ABI_MAJOR=2"]);
    let good = c_plugin(dir.path(), "libsphere.so", &[]);
    let cases: [(PathBuf, &str, &str); 5] = [
        (dir.path().join("libmissing.so"), "sphere", "libmissing.so does not exist"),
        // With the loader's own word for it.
        (junk, "sphere", "cannot load the plugin library"),
        (no_entry, "sphere", "is not an optx plugin: it does not export `optx_plugin_v1`"),
        (abi2, "sphere", "built for plugin ABI 2.0, and this optx speaks ABI 1.0"),
        (good, "spher", "offers no runner `spher`; its runners: sphere"),
    ];
    // A FIFO would block dlopen forever.
    let fifo = dir.path().join("libfifo.so");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let cases = cases.into_iter().chain([(fifo, "sphere", "libfifo.so is not a regular file")]);
    for (so, name, want) in cases {
        let runner = format!("kind = \"plugin\"\nlibrary = \"{}\"\nname = \"{name}\"", so.display());
        let e = Exp::new("load", &toml("load", XY, &runner, "max_trials = 2", ""));
        for cmd in ["validate", "run"] {
            let start = std::time::Instant::now();
            let out = e.optx(&[cmd, "experiment.toml"]);
            assert!(start.elapsed().as_secs() < 20, "{cmd} {name}: took {:?}", start.elapsed());
            assert_eq!(code(&out), 2, "{cmd}: {}", text(&out));
            let msg = text(&out);
            assert!(msg.contains(want), "{cmd}: {msg}");
            if want.starts_with("cannot load") {
                assert!(msg.contains("ELF") || msg.contains("too short"), "the loader's message: {msg}");
            }
            assert!(msg.contains("experiment.toml:14:11: `runner.library`"), "names the file, line and key: {msg}");
        }
        assert!(!e.path().join(".optx").exists(), "nothing is created before the plugins are checked");
        // The corrected file runs at once: the refusal left nothing behind that refuses it.
        let sphere = dir.path().join("libsphere.so");
        let fixed = format!("kind = \"plugin\"\nlibrary = \"{}\"\nname = \"sphere\"", sphere.display());
        let metric = format!("[metrics.f]\nplugin = {{ library = \"{}\", name = \"f\" }}", sphere.display());
        e.file(
            "experiment.toml",
            &toml("load", XY, &fixed, "max_trials = 2\ninitial_seconds_between_polls = 0", &metric),
        );
        e.run_ok(&["run", "experiment.toml", "-q"]);
        assert_eq!(e.trials().len(), 2);
    }
}

#[test]
fn an_abandoned_arm_is_not_deployed_again() {
    let so = lib("misbehave");
    let params = "mode = { type = \"fixed\", value = \"abandon\" }\nx = { type = \"choice\", values = [0.25, 0.75] }";
    let runner = format!("kind = \"plugin\"\nlibrary = \"{}\"\nname = \"misbehave\"", so.display());
    let metrics = format!("[metrics.f]\nplugin = {{ library = \"{}\", name = \"value\" }}", so.display());
    let orch =
        "max_trials = 6\nparallelism = 1\ninitial_seconds_between_polls = 0.05\ntolerated_trial_failure_rate = 1.0";
    let e = Exp::new("aband", &toml("aband", params, &runner, orch, &metrics));
    let out = e.run_ok(&["run", "experiment.toml"]);
    let trials = e.trials();
    assert!(trials.iter().all(|t| status(t) == "ABANDONED"), "{trials:?}");
    let arms: Vec<String> = trials.iter().map(|t| t["parameters"].to_string()).collect();
    let distinct: std::collections::HashSet<&String> = arms.iter().collect();
    assert_eq!(distinct.len(), arms.len(), "an abandoned arm ran again: {arms:?}");
    assert_eq!(arms.len(), 2, "{}", text(&out));
    assert!(text(&out).contains("exhausted"), "{}", text(&out));
}

#[test]
fn plugin_trials_running_at_a_kill_9_are_re_attached_on_resume() {
    let e = Exp::new(
        "h6",
        &h6_plugin("h6", 1.5, "max_trials = 9\nparallelism = 3\ninitial_seconds_between_polls = 0.1", true),
    );
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "3 completed trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 3);
    e.wait_for(60, "running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") >= 1);
    optx.kill().unwrap();
    optx.wait().unwrap();
    let running: Vec<u64> =
        e.trials().iter().filter(|t| status(t) == "RUNNING").map(|t| t["index"].as_u64().unwrap()).collect();
    assert!(!running.is_empty());
    let out = e.run_ok(&["resume", "experiment.toml"]);
    assert!(text(&out).contains("re-attached"), "{}", text(&out));
    let trials = e.trials();
    assert_eq!(trials.len(), 9, "{}", text(&out));
    for t in &trials {
        assert_eq!(status(t), "COMPLETED", "{t}");
        assert_eq!(t["lost"], false, "the plugin found its trials again by their run metadata: {t}");
        let p = &t["parameters"];
        let x: Vec<f64> = (1..=6).map(|i| p[format!("x{i}")].as_f64().unwrap()).collect();
        assert!(close(metric(t, "hartmann6").unwrap(), hartmann6(&x)), "{t}");
    }
}

#[test]
fn plugin_trials_over_their_ttl_are_stopped_and_a_plugin_metric_serves_a_command_runner() {
    // ttl: the runner's stop_trial is called and its stop metadata kept.
    let orch = "max_trials = 2\nparallelism = 2\ninitial_seconds_between_polls = 0.1\nttl_seconds_for_trials = 0.5\ntolerated_trial_failure_rate = 1.0";
    let e = Exp::new("ttl", &h6_plugin("ttl", 60.0, orch, false));
    e.run_ok(&["run", "experiment.toml"]);
    let stops = stops(&e);
    assert_eq!(stops.len(), 2);
    for (s, _, meta) in stops {
        assert_eq!(s, "FAILED");
        assert!(meta.contains("ran longer than ttl_seconds_for_trials"), "{meta}");
    }

    // A command runner whose metric comes from a plugin (reading a file the script wrote).
    let metrics =
        format!("[metrics.l2norm]\nplugin = {{ library = \"{}\", name = \"l2norm\" }}", lib("hartmann6").display());
    let runner = r#"command = ["sh", "-c", "echo '{{\"l2norm\": {x}}}' > {trial_dir}/hartmann6.json; echo f={y}"]"#;
    let orch = "max_trials = 4\nparallelism = 2\ninitial_seconds_between_polls = 0.05";
    let text_ = toml("cmd", XY, runner, orch, &metrics)
        .replace("[orchestration]", "[constraints]\noutcomes = [\"l2norm <= 2\"]\n\n[orchestration]");
    let e = Exp::new("cmd", &text_);
    e.run_ok(&["run", "experiment.toml"]);
    for t in e.trials() {
        assert_eq!(status(&t), "COMPLETED", "{t}");
        assert_eq!(metric(&t, "l2norm"), t["parameters"]["x"].as_f64());
        assert_eq!(metric(&t, "f"), t["parameters"]["y"].as_f64());
    }
}

#[test]
fn a_second_interrupt_stops_plugin_trials_through_stop_trial_and_they_run_again() {
    let orch = "max_trials = 4\nparallelism = 2\ninitial_seconds_between_polls = 0.1";
    let text_ = |delay| h6_plugin("stop", delay, orch, true);
    let e = Exp::new("stop", &text_(60.0));
    let mut optx = e.spawn(&["run", "experiment.toml"], "run");
    e.wait_for(60, "2 running trials", |e| e.count("SELECT count(*) FROM trials WHERE status = 'RUNNING'") == 2);
    signal(optx.id(), "INT");
    e.wait_for(10, "the first interrupt to be seen", |e| e.log("run").contains("interrupted"));
    signal(optx.id(), "INT");
    assert_eq!(optx.wait().unwrap().code(), Some(130), "{}", e.log("run"));
    let rows = stops(&e);
    assert_eq!(rows.len(), 2);
    for (status, lost, stop) in &rows {
        assert_eq!((status.as_str(), *lost), ("FAILED", true));
        assert!(stop.contains("stopped by a second interrupt"), "the plugin's stop metadata: {stop}");
    }
    e.file("experiment.toml", &text_(0.0));
    e.run_ok(&["resume", "experiment.toml", "--allow-changes", "-q"]);
    let trials = e.trials();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false && status(t) == "COMPLETED").count(), 4);
    assert_eq!(trials.iter().filter(|t| t["generation"] == "rerun").count(), 2);
}

#[test]
fn learning_curves_of_plugin_trials_arrive_while_they_run() {
    let e = example("branin_queue.toml", |t| {
        let lib = t.split("library = \"").nth(1).unwrap().split('"').next().unwrap().to_string();
        format!("{t}\n[metrics.curve]\nplugin = {{ library = \"{lib}\", name = \"curve\" }}\n")
            .replace("max_trials = 20", "max_trials = 6")
    });
    e.run_ok(&["run", "experiment.toml"]);
    let points = e.count("SELECT count(*) FROM observations WHERE metric = 'curve' AND progression IS NOT NULL");
    assert!(points >= 6, "{points} points");
    let early = e.count(
        "SELECT count(*) FROM observations o JOIN trials t ON o.trial = t.idx \
         WHERE o.metric = 'curve' AND o.progression IS NOT NULL AND o.final = 0 AND o.time < t.completed_at",
    );
    assert!(early >= 1, "no point of a learning curve arrived before its trial ended");
    // No point is stored twice (the driver sends each once; the end adds only the rest).
    let dupes = e.count(
        "SELECT count(*) FROM (SELECT trial, progression, count(*) n FROM observations \
         WHERE metric = 'curve' AND final = 0 GROUP BY trial, progression HAVING n > 1)",
    );
    assert_eq!(dupes, 0);
}
