//! What people see and type: the HTML report in a real headless Chromium, init, schema,
//! completions, `--json`, closed pipes, rounded values, and the hints of a missing metric.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Two parameters, a learning curve per trial, a failure now and then, early stopping.
fn curves_exp(name: &str, max_trials: u32) -> Exp {
    let script = r#"import sys, time
x, y = float(sys.argv[1]), float(sys.argv[2])
if x > 0.93:
    print("diverged", file=sys.stderr)
    sys.exit(3)
for s in range(1, 6):
    print(f"step={s} f={(x - 0.3) ** 2 + (y - 0.6) ** 2 + 1.0 / s}", flush=True)
    time.sleep(0.1)
"#;
    let text = toml(
        name,
        "x = { type = \"float\", bounds = [0.0, 1.0] }\ny = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = [\"python3\", \"trial.py\", \"{x}\", \"{y}\"]",
        &format!("max_trials = {max_trials}\nparallelism = 2\ninitial_seconds_between_polls = 0.1\ntolerated_trial_failure_rate = 1.0"),
        "[generation]\nmethod = \"sobol\"\n\n[early_stopping]\nstrategy = \"percentile\"\nmin_progression = 3\nmin_curves = 4",
    );
    let e = Exp::new(name, &text);
    e.file("trial.py", script);
    e
}

fn chromium() -> String {
    std::env::var("OPTX_TEST_CHROMIUM")
        .expect("OPTX_TEST_CHROMIUM: the path of a headless Chromium (scripts/test.sh finds or installs one)")
}

/// Chromium on `page`: its DOM after load, and the console lines it printed.
fn render(page: &std::path::Path, extra: &[&str]) -> (String, Vec<String>) {
    let url = format!("file://{}", page.display());
    let mut c = Command::new(chromium());
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"])
        .args(extra)
        .arg(&url)
        .current_dir(page.parent().unwrap());
    let out = output_within(c, Duration::from_secs(120));
    assert!(out.status.success(), "chromium failed: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_plot_and_no_console_error() {
    let e = curves_exp("report", 16);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let trials = e.trials();
    assert!(trials.iter().any(|t| status(t) == "EARLY_STOPPED"), "the run stops some trials");
    assert!(trials.iter().any(|t| status(t) == "FAILED"), "and some fail");
    let out = e.run_ok(&["report", "experiment.toml", "-o", "report.html"]);
    assert!(text(&out).contains("wrote report.html"), "{}", text(&out));
    let page = e.path().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing is fetched.
    for needle in ["<script src", "<link", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(needle), "the report refers to {needle}");
    }
    let (dom, console) = render(&page, &["--dump-dom"]);
    assert!(console.is_empty(), "console output: {console:?}");
    for id in ["trace", "slice-x", "slice-y", "parallel", "importance", "contour", "curves", "timeline"] {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no plot {id}"));
        let fig = &dom[at..at + dom[at..].find("</figure>").unwrap()];
        assert!(
            fig.contains("<svg")
                && fig.matches("<circle").count() + fig.matches("<polyline").count() + fig.matches("<rect").count() > 3,
            "plot {id} is empty: {fig:.300}"
        );
    }
    assert!(dom.contains("id=\"failures\"") && dom.contains("diverged"), "failures grouped by reason");
    assert!(dom.matches("<tr").count() >= trials.len(), "a row per trial");
    // A screenshot, as a person would see it: a real image of the page.
    let shot = e.path().join("report.png");
    let (_, console) = render(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1400,2400"]);
    assert!(console.is_empty(), "console output: {console:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    assert!(png.len() > 40_000, "a screenshot of {} bytes is nearly blank", png.len());
}

#[test]
fn the_report_of_two_objectives_draws_the_pareto_front() {
    let text = "[experiment]\nname = \"pareto\"\nseed = 2\n\n[parameters]\nx = { type = \"float\", bounds = [0.0, 1.0] }\n\n\
        [objective]\nminimize = [\"a\", \"b\"]\n\n[runner]\ncommand = [\"python3\", \"-c\", \"import sys; x=float(sys.argv[1]); print('a=%s b=%s' % (x, (1-x)**2))\", \"{x}\"]\n\n\
        [orchestration]\nmax_trials = 8\n\n[generation]\nmethod = \"sobol\"\n";
    let e = Exp::new("pareto", text);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    e.run_ok(&["report", "experiment.toml"]);
    let (dom, console) = render(&e.path().join("report.html"), &["--dump-dom"]);
    assert!(console.is_empty(), "{console:?}");
    assert!(dom.contains("id=\"pareto\""), "no Pareto front");
}

/// The type of every value, recursively: the shape scripts rely on.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value::*;
    match v {
        Object(m) => Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Array(a) => Array(a.first().map(shape).into_iter().collect()),
        Null => String("null".into()),
        Bool(_) => String("bool".into()),
        Number(_) => String("number".into()),
        String(_) => String("string".into()),
    }
}

#[test]
fn tables_and_json_shapes_are_stable() {
    let text = toml(
        "shapes",
        "x = { type = \"float\", bounds = [0.0, 1.0] }\nk = { type = \"choice\", values = [\"a\", \"b\"] }",
        "command = \"echo f={x}\"",
        "max_trials = 4",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("shapes", &text);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let table = text_of(&e.run_ok(&["trials", "experiment.toml"]));
    insta::assert_snapshot!("trials_table", table);
    let trials: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["trials", "experiment.toml", "--json"]).stdout).unwrap();
    insta::assert_snapshot!("trials_json_shape", serde_json::to_string_pretty(&shape(&trials)).unwrap());
    let status: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["status", "experiment.toml", "--json"]).stdout).unwrap();
    assert_eq!(status["by_status"]["COMPLETED"], 4);
    assert_eq!(status["owned"], false);
    insta::assert_snapshot!("status_json_shape", serde_json::to_string_pretty(&shape(&status)).unwrap());
    let best: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["best", "experiment.toml", "--json"]).stdout).unwrap();
    insta::assert_snapshot!("best_json_shape", serde_json::to_string_pretty(&shape(&best)).unwrap());
    // --events-json ends with a summary event.
    let e2 = Exp::new("shapes", &text);
    let out = e2.run_ok(&["run", "experiment.toml", "--events-json"]);
    let last: serde_json::Value = serde_json::from_str(text_of(&out).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["end"], "done");
    assert_eq!(last["trials"]["COMPLETED"], 4);
}

fn text_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sh -c "optx ... | head -1"`: optx's own exit code and its stderr.
fn piped_to_head(e: &Exp, args: &str) -> (i32, String) {
    let script = format!("{} {args} 2>err.log | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}", optx_bin().display());
    let out = output_within(
        {
            let mut c = Command::new("bash");
            c.args(["-c", &script]).current_dir(e.path());
            c
        },
        Duration::from_secs(300),
    );
    let code = text_of(&out).trim().parse().unwrap_or(-1);
    (code, std::fs::read_to_string(e.path().join("err.log")).unwrap_or_default())
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let text = toml(
        "pipes",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = \"echo f={x}\"",
        "max_trials = 300\nparallelism = 4\ninitial_seconds_between_polls = 0",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("pipes", &text);
    // The run goes on to its end when its reader goes away.
    let (code, err) = piped_to_head(&e, "run experiment.toml");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(e.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'"), 300);
    // A run that stops on the failure rate keeps its exit code 1, its reader gone or not.
    let failing = toml(
        "pipes_fail",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = [\"sh\", \"-c\", \"sleep 0.05; exit 1\"]",
        "max_trials = 40",
        "",
    );
    let f = Exp::new("pipes_fail", &failing);
    let (code, err) = piped_to_head(&f, "run experiment.toml");
    assert_eq!(code, 1, "{err}");
    assert!(f.count("SELECT count(*) FROM trials WHERE status = 'FAILED'") >= 5);
    // More output than a pipe holds: the write after head is gone fails with EPIPE.
    for args in ["trials experiment.toml --json", "trials experiment.toml", "completions bash", "schema"] {
        let (code, err) = piped_to_head(&e, args);
        assert_eq!((code, err.as_str()), (0, ""), "optx {args}");
    }
}

#[test]
fn init_writes_a_file_that_validates_and_never_overwrites() {
    let e = Exp::new("unused", "");
    std::fs::remove_file(e.path().join("experiment.toml")).unwrap();
    let out =
        e.run_ok(&["init", "--command", "python3 train.py --lr={lr} --batch-size={batch_size} --opt={optimizer}"]);
    assert!(text(&out).contains("wrote experiment.toml"), "{}", text(&out));
    let file = std::fs::read_to_string(e.path().join("experiment.toml")).unwrap();
    for p in ["lr ", "batch_size ", "optimizer "] {
        assert!(file.lines().any(|l| l.starts_with(p) && l.contains("= { type = ")), "{p} in\n{file}");
    }
    let out = e.run_ok(&["validate", "experiment.toml"]);
    assert!(text(&out).contains("lr"), "{}", text(&out));
    let again = e.optx(&["init"]);
    assert_eq!(code(&again), 2, "{}", text(&again));
    assert!(text(&again).contains("exists already"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(e.path().join("experiment.toml")).unwrap(), file, "untouched");
    let printed = e.run_ok(&["init", "-o", "-"]);
    assert!(text_of(&printed).contains("[runner]"));
}

#[test]
fn schema_and_completions_are_printed() {
    let e = Exp::new("unused", "");
    let schema: serde_json::Value = serde_json::from_slice(&e.run_ok(&["schema"]).stdout).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert!(schema["properties"]["orchestration"].is_object());
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = e.run_ok(&["completions", shell]);
        assert!(text_of(&out).contains("replay"), "{shell}: no subcommand in the completions");
    }
}

#[test]
fn validate_checks_that_the_program_exists() {
    let file = toml(
        "prog",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = [\"no-such-program-here\", \"{x}\"]",
        "max_trials = 2",
        "",
    );
    let e = Exp::new("prog", &file);
    let out = e.optx(&["validate", "experiment.toml"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("experiment.toml:12:") && text(&out).contains("`no-such-program-here` is not on PATH"),
        "{}",
        text(&out)
    );
    let file = toml(
        "prog",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = [\"./train.sh\", \"{x}\"]",
        "max_trials = 2",
        "",
    );
    let e = Exp::new("prog", &file);
    e.file("train.sh", "#!/bin/sh\necho f=$1\n");
    let out = e.optx(&["validate", "experiment.toml"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out).contains("is not executable"), "{}", text(&out));
}

#[test]
fn floats_are_passed_with_their_significant_digits_and_a_missing_metric_says_what_was_printed() {
    let text = toml(
        "digits",
        "lr = { type = \"float\", bounds = [1e-5, 1e-1], scaling = \"log\" }\nm = { type = \"float\", bounds = [-1.0, 1.0], digits = 3 }",
        "command = \"echo lr={lr} m={m}; echo 'f: 0.5'\"\nshell = true",
        "max_trials = 6\ntolerated_trial_failure_rate = 1.0",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("digits", &text);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    for t in e.trials() {
        let (lr, m) = (t["parameters"]["lr"].as_f64().unwrap(), t["parameters"]["m"].as_f64().unwrap());
        assert_eq!(format!("{lr:.5e}").parse::<f64>().unwrap(), lr, "lr {lr} has more than 6 significant digits");
        assert_eq!(format!("{m:.2e}").parse::<f64>().unwrap(), m, "m {m} has more than 3");
        let printed = std::fs::read_to_string(e.trial_dir(t["index"].as_u64().unwrap()).join("stdout.log")).unwrap();
        assert!(printed.starts_with(&format!("lr={} m={}", t["parameters"]["lr"], t["parameters"]["m"])), "{printed}");
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.contains("stdout reported `lr`, `m`"), "{reason}");
        assert!(reason.contains("a line `f: 0.5` looks like `f`") && reason.contains("[metrics.f] regex"), "{reason}");
    }
}

#[test]
fn a_terminal_gets_a_progress_line_under_the_events_and_a_pipe_plain_lines() {
    let file = toml(
        "tty",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = \"sh -c 'sleep 0.2; echo f={x}'\"",
        "max_trials = 4\nparallelism = 2",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("tty", &file);
    // `script` gives optx a terminal (a pseudo-terminal), as a person's shell does.
    let run = format!("{} run experiment.toml", optx_bin().display());
    let mut c = Command::new("script");
    c.args(["-qec", &run, "/dev/null"]).current_dir(e.path());
    let out = output_within(c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", text(&out));
    let seen = text_of(&out);
    assert!(seen.contains("4/4 trials: 0 running, 4 completed; best f "), "{seen}");
    assert!(seen.contains("[   0] completed  f = "), "the events above it: {seen}");
    assert!(seen.contains("\u{1b}[2K"), "the line is redrawn in place: {seen}");
    // A table fits the terminal: 40 columns here.
    let trials = format!("stty cols 40 && {} trials experiment.toml", optx_bin().display());
    let mut c = Command::new("script");
    c.args(["-qec", &trials, "/dev/null"]).current_dir(e.path());
    let out = output_within(c, Duration::from_secs(60));
    let table = text_of(&out);
    assert!(table.contains("0*") && table.matches("COMP").count() == 4, "{table}");
    for l in table.lines() {
        assert!(l.trim_end_matches('\r').chars().count() <= 40, "wider than the terminal: {l:?}\n{table}");
    }
    let wide = e.run_ok(&["trials", "experiment.toml"]);
    assert!(text_of(&wide).lines().any(|l| l.chars().count() > 40), "piped, the table is whole");
    // Piped: the same events, no progress line, no escape codes.
    let e = Exp::new("tty", &file);
    let out = e.run_ok(&["run", "experiment.toml"]);
    let piped = text_of(&out);
    assert!(
        piped.contains("[   0] completed  f = ") && !piped.contains("trials: 0 running") && !piped.contains('\u{1b}'),
        "{piped}"
    );
}

#[test]
fn best_of_a_noisy_objective_gives_the_models_pick_beside_the_best_observed() {
    let script = r#"import json, random, sys
x = float(sys.argv[1])
random.seed(int(sys.argv[2]))
print(json.dumps({"f": [(x - 0.3) ** 2 + random.gauss(0, 0.1), 0.1]}))
"#;
    let file = toml(
        "noisy",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = [\"python3\", \"noisy.py\", \"{x}\", \"{trial}\"]",
        "max_trials = 14",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("noisy", &file);
    e.file("noisy.py", script);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let best: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["best", "experiment.toml", "--json"]).stdout).unwrap();
    let m = &best["model"];
    let (mean, sd) = (m["predicted"]["mean"].as_f64().unwrap(), m["predicted"]["sd"].as_f64().unwrap());
    assert!(sd > 0.0 && sd < 0.2, "{best}");
    // The model's pick is near the true optimum (x = 0.3, f = 0), its mean too.
    let x = m["parameters"]["x"].as_f64().unwrap();
    assert!((x - 0.3).abs() < 0.25 && mean.abs() < 0.15, "{best}");
    assert!(m["observed"].as_f64().is_some());
    let text = text_of(&e.run_ok(&["best", "experiment.toml"]));
    assert!(text.contains("the objective is noisy: the model's best is trial"), "{text}");
    // A noise-free objective has no such pick.
    let clean = toml(
        "clean",
        "x = { type = \"float\", bounds = [0.0, 1.0] }",
        "command = \"echo f={x}\"",
        "max_trials = 14",
        "[generation]\nmethod = \"sobol\"",
    );
    let e = Exp::new("clean", &clean);
    e.run_ok(&["run", "experiment.toml", "--quiet"]);
    let best: serde_json::Value =
        serde_json::from_slice(&e.run_ok(&["best", "experiment.toml", "--json"]).stdout).unwrap();
    assert!(best.get("model").is_none(), "{best}");
}
