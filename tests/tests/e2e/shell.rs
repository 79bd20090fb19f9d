//! `shell = true`: every value reaches the trial byte for byte wherever its placeholder
//! sits (outside quotes, in single quotes, in double quotes), and none runs as shell code.

use crate::common::*;

/// Values that break naive quoting.
const HOSTILE: [&str; 26] = [
    "a b",
    "",
    " ",
    "'",
    "\"",
    "\\",
    "$(touch pwned1)",
    "`touch pwned2`",
    "; touch pwned3",
    "&& touch pwned4",
    "| touch pwned5",
    "> pwned6",
    "$HOME",
    "${HOME}",
    "'; touch pwned7; '",
    "\"; touch pwned8; \"",
    "\\\"; touch pwned9 #",
    "a\nb",
    "\ttab",
    "*",
    "~",
    "!",
    "#comment",
    "it's",
    "--flag",
    "{x}",
];

fn run_with(name: &str, command: &str) -> Exp {
    let values: Vec<String> = HOSTILE.iter().map(|v| serde_json::to_string(v).unwrap()).collect();
    let params = format!("c = {{ type = \"choice\", values = [{}] }}", values.join(", "));
    let runner = format!("shell = true\ncommand = {}", serde_json::to_string(command).unwrap());
    let extra = "[generation]\nmethod = \"grid\"";
    let orch = "max_trials = 26\nparallelism = 4\ninitial_seconds_between_polls = 0";
    let e = Exp::new(name, &toml(name, &params, &runner, orch, extra));
    e.run_ok(&["run", "experiment.toml", "-q"]);
    e
}

fn pwned(e: &Exp) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(e.path()) {
        let n = entry.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with("pwned") {
            found.push(entry.display().to_string());
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn hostile_values_reach_the_trial_byte_for_byte_in_every_quoting() {
    let forms = [
        ("bare", "printf '%s' {c} > {trial_dir}/got && echo f=1", ""),
        ("single", "printf '%s' '--c={c}' > {trial_dir}/got && echo f=1", "--c="),
        ("double", "printf '%s' \"--c={c}\" > {trial_dir}/got && echo f=1", "--c="),
        ("subst", "printf '%s' \"$(printf '%s' {c})\" > {trial_dir}/got; echo f=1", ""),
    ];
    for (name, command, prefix) in forms {
        let e = run_with(name, command);
        let trials = e.trials();
        assert_eq!(trials.len(), 26, "{name}");
        for t in &trials {
            assert_eq!(status(t), "COMPLETED", "{name}: {t}");
            let stored = t["parameters"]["c"].as_str().unwrap();
            let got = std::fs::read(e.trial_dir(t["index"].as_u64().unwrap()).join("got")).unwrap();
            let mut want = format!("{prefix}{stored}");
            if name == "subst" {
                // $(...) drops trailing newlines, as it always does.
                want = want.trim_end_matches('\n').to_string();
            }
            assert_eq!(String::from_utf8_lossy(&got), want, "{name}: the trial got another value than the store holds");
        }
        assert!(pwned(&e).is_empty(), "{name}: a value ran as shell code: {:?}", pwned(&e));
    }
}

#[test]
fn placeholders_where_no_quoting_is_safe_are_refused() {
    let params = r#"c = { type = "choice", values = ["a", "b"] }"#;
    for (command, want) in [
        ("echo `echo {c}`; echo f=1", "inside backticks"),
        ("echo ${{{c}}}; echo f=1", "inside `${...}`"),
        ("echo \\{c}; echo f=1", "right after a backslash"),
        ("echo f=1 # {c}", "in a comment"),
        ("cat > cfg <<EOF\nc: {c}\nEOF\necho f=1", "after a here-document"),
        ("echo $(({c} * 2)); echo f=1", "inside `$((...))`"),
    ] {
        let runner = format!("shell = true\ncommand = {}", serde_json::to_string(command).unwrap());
        let e = Exp::new("refuse", &toml("refuse", params, &runner, "max_trials = 2", ""));
        let out = e.optx(&["validate", "experiment.toml"]);
        assert_eq!(code(&out), 2, "{command}: {}", text(&out));
        assert!(text(&out).contains(want), "{command}: {}", text(&out));
        assert!(text(&out).contains("experiment.toml:13:11:"), "{}", text(&out));
    }
}

#[test]
fn shell_operators_in_a_command_without_a_shell_get_a_warning() {
    let params = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;
    let runner = r#"command = "echo f={x} | tee out.txt""#;
    let e = Exp::new("pipe", &toml("pipe", params, runner, "max_trials = 1", ""));
    let out = e.optx(&["validate", "experiment.toml"]);
    assert_eq!(code(&out), 0, "a warning, not an error: {}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("warning: experiment.toml:12:11: `runner.command` holds `|`"), "{msg}");
    assert!(msg.contains("shell = true"), "{msg}");
    let out = e.optx(&["run", "experiment.toml", "-q"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning:"), "{}", text(&out));
}
