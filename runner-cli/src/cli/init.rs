//! `optx init [--command "..."]`: a commented starter file for an existing script, which
//! `optx validate` accepts as written.

use std::path::Path;

use super::out::out;
use super::{CliError, Done, Outcome};

/// The command of the starter file when none is given.
const EXAMPLE_COMMAND: &str = "python3 train.py --lr={lr} --batch-size={batch_size}";

/// A range to start from, guessed from a parameter's name, and why.
fn guess(name: &str) -> (&'static str, &'static str) {
    let n = name.to_ascii_lowercase();
    // Whole words of the name (`batch_size`: `batch`, `size`).
    let has = |w: &[&str]| n.split(['_', '-', '.']).any(|t| w.contains(&t));
    if has(&["lr", "rate", "alpha", "lambda", "decay", "eps", "reg", "l2", "l1", "wd", "gamma", "c"]) {
        (r#"{ type = "float", bounds = [1e-5, 1e-1], scaling = "log" }"#, "a rate or a weight: searched in log space")
    } else if has(&["batch", "size", "width", "hidden", "units", "channels", "dim", "bs"]) {
        (r#"{ type = "int", bounds = [16, 512], scaling = "log" }"#, "a size: searched in log space")
    } else if has(&["epochs", "steps", "iters", "iterations", "layers", "depth", "n", "num", "count", "k", "trees"]) {
        (r#"{ type = "int", bounds = [1, 10] }"#, "a count")
    } else if has(&["dropout", "momentum", "ratio", "frac", "fraction", "prob", "p", "beta"]) {
        (r#"{ type = "float", bounds = [0.0, 0.9] }"#, "a fraction")
    } else if has(&["optimizer", "optim", "activation", "kind", "mode", "method", "solver", "loss"]) {
        (r#"{ type = "choice", values = ["a", "b"] }"#, "a choice: list its values")
    } else {
        (r#"{ type = "float", bounds = [0.0, 1.0] }"#, "set its range")
    }
}

/// The experiment's name: the script's file name without its extension, when it is a name.
fn name_of(words: &[String]) -> String {
    let script = words.iter().find(|w| !w.starts_with('-') && w.contains('.')).or(words.first());
    let stem = script
        .map(|w| Path::new(w.split('{').next().unwrap_or(w)))
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ok = !stem.is_empty() && stem.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        stem
    } else {
        "experiment".into()
    }
}

/// The text of the starter file for `command`.
pub(crate) fn starter(command: &str) -> Result<String, String> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| format!("--command `{command}` cannot be split into words (an unclosed quote?)"))?;
    let params = crate::config::placeholders_of(command).map_err(|e| format!("--command `{command}`: {e}"))?;
    let shell = words.iter().any(|w| {
        matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&" | ">" | ">>" | "<" | "2>" | "2>&1")
            || w.starts_with(['>', '<', '|'])
            || w.ends_with(';')
    });
    let mut t = String::new();
    let name = name_of(&words);
    t += &format!("# An experiment for `{command}`: set the ranges and the objective, then\n");
    t += "#   optx validate experiment.toml   # checks the file and that the program exists\n";
    t += "#   optx run experiment.toml\n";
    t += "# Every key: `optx schema` (a JSON Schema, for editor completion) and CONFIG.md.\n\n";
    t += "[experiment]\n";
    t += &format!("name = \"{name}\"\n");
    t += "seed = 1                     # the same seed proposes the same trials\n\n";
    t += "[parameters]\n";
    if params.is_empty() {
        t += "# The command has no placeholders like {lr}: optx passes every parameter to the\n";
        t += "# script as an environment variable too (OPTX_PARAM_X for x), and in\n";
        t += "# $OPTX_PARAMS_FILE as JSON. Rename `x` to what the script reads.\n";
        let (domain, why) = guess("x");
        t += &format!("x = {domain}   # {why}\n");
    } else {
        t += "# Found in the command's placeholders: each {name} becomes the trial's value.\n";
        let w = params.iter().map(String::len).max().unwrap_or(0);
        for p in &params {
            let (domain, why) = guess(p);
            t += &format!("{p:<w$} = {domain}   # {why}\n");
        }
    }
    t += "\n[objective]\n";
    t += "# The metric the script reports: a line `loss=0.31` (or `loss: 0.31` with a\n";
    t += "# [metrics.loss] regex), or {\"loss\": 0.31} written to $OPTX_RESULT_FILE.\n";
    t += "minimize = \"loss\"            # or maximize = \"accuracy\"\n\n";
    t += "[runner]\n";
    t += &format!("command = {}\n", toml_string(command));
    if shell {
        t += "shell = true                 # pipes and redirections: run by `sh -c`\n";
    }
    t += "# timeout = \"2h\"             # a trial running longer fails (and is stopped)\n";
    t += "# progression = \"epoch\"      # lines `epoch=3 loss=0.4` are points of a learning curve\n\n";
    t += "[orchestration]\n";
    t += "max_trials = 30\n";
    t += "parallelism = 1              # trials at once\n";
    t += "\n# Stop trials whose learning curve will not win (needs `progression` reports):\n";
    t += "# [early_stopping]\n";
    t += "# strategy = \"percentile\"\n";
    t += "# percentile_threshold = 50\n";
    t += "# min_progression = 3\n";
    Ok(t)
}

fn toml_string(s: &str) -> String {
    if !s.contains('\'') && !s.contains('\n') {
        format!("'{s}'")
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

pub(super) fn cmd_init(command: Option<&str>, output: &Path) -> Outcome {
    let text = match starter(command.unwrap_or(EXAMPLE_COMMAND)) {
        Ok(t) => t,
        Err(e) => return Err(CliError::usage(e)),
    };
    if output == Path::new("-") {
        out!("{text}");
        return Ok(Done::Ok);
    }
    // Never overwrite: a starter file replaces nobody's work.
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(output);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::usage(format!(
                "{} exists already: init never overwrites (give another with -o FILE, or -o - to print it)",
                output.display()
            )))
        }
        Err(e) => return Err(CliError::usage(format!("cannot create {}: {e}", output.display()))),
    };
    if let Err(e) = std::io::Write::write_all(&mut file, text.as_bytes()) {
        let _ = std::fs::remove_file(output);
        return Err(CliError::runtime(format!("writing {}: {e}", output.display())));
    }
    eprintln!(
        "optx: wrote {}; set its ranges and objective, then `optx validate {}`",
        output.display(),
        output.display()
    );
    Ok(Done::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_file_parses_with_a_parameter_per_placeholder() {
        for command in
            [EXAMPLE_COMMAND, "./sim --temp={temperature} --n={n_steps} {trial_dir}", "python3 x.py | tee out", "echo"]
        {
            let text = starter(command).unwrap();
            let spec = crate::config::parse(&text, "experiment.toml", Path::new("/tmp")).unwrap_or_else(|e| {
                panic!("{command}: {}\n{text}", e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
            });
            let names: Vec<&str> = spec.space.parameters.iter().map(|p| p.name.as_str()).collect();
            let want = crate::config::placeholders_of(command).unwrap();
            if want.is_empty() {
                assert_eq!(names, ["x"]);
            } else {
                assert_eq!(names, want, "{text}");
            }
        }
        let t = starter("python3 train.py --lr={lr}").unwrap();
        assert!(t.contains("name = \"train\""), "{t}");
        assert!(t.contains("scaling = \"log\""), "{t}");
        assert!(starter("python3 x.py | tee out").unwrap().contains("shell = true"));
        assert!(starter("python3 'unclosed").is_err());
    }

    #[test]
    fn the_starter_file_validates_against_the_schema() {
        let v = crate::config::schema::tests::validator();
        for command in [EXAMPLE_COMMAND, "python3 x.py | tee out"] {
            let text = starter(command).unwrap();
            let errors: Vec<String> =
                v.iter_errors(&crate::config::schema::tests::json_of(&text)).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{command}: {errors:?}");
        }
    }
}
