//! Bad experiment files: every error at once, with file:line:col, exit 2, no store.
//! The messages are what people read, so they are snapshot-tested.

use crate::common::*;

fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bad-configs")
}

#[test]
fn bad_files_are_refused_with_every_error_and_its_position() {
    let dir = corpus();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let work = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join(&name), work.path().join(&name)).unwrap();
        for cmd in ["validate", "run"] {
            let out =
                std::process::Command::new(optx_bin()).args([cmd, &name]).current_dir(work.path()).output().unwrap();
            assert_eq!(code(&out), 2, "{cmd} {name}: {}", text(&out));
            assert!(out.stdout.is_empty(), "errors go to stderr");
            let stderr = String::from_utf8(out.stderr).unwrap();
            for line in stderr.lines().filter(|l| !l.starts_with("error: ")) {
                assert!(line.starts_with(&format!("{name}:")), "every error names the file, line and column: {line}");
            }
            if cmd == "validate" {
                insta::assert_snapshot!(name.trim_end_matches(".toml").to_string(), stderr);
            }
        }
        assert!(!work.path().join(".optx").exists(), "no store is created for a bad file ({name})");
    }
}

#[test]
fn validate_prints_the_resolved_space() {
    let e = Exp::new(
        "ok",
        &toml(
            "ok",
            "lr = { type = \"float\", bounds = [1e-5, 1e-1], scaling = \"log\" }\nopt = { type = \"choice\", values = [\"adam\", \"sgd\"] }",
            "command = [\"python3\", \"train.py\", \"--lr={lr}\"]",
            "max_trials = 10",
            "",
        ),
    );
    let out = e.run_ok(&["validate", "experiment.toml"]);
    let s = text(&out);
    assert!(s.contains("lr   float [0.00001, 0.1] log") || s.contains("lr   float [1e-5, 0.1] log"), "{s}");
    assert!(s.contains("opt  choice {adam, sgd}"), "{s}");
    assert!(s.contains("generation:  the center point, then scrambled Sobol"), "{s}");
    assert!(!e.path().join(".optx").exists());
}

#[test]
fn a_file_with_thousands_of_errors_is_reported_in_linear_time_and_capped() {
    let mut text = String::from("[experiment]\nname = \"many\"\n[parameters]\n");
    for i in 0..20_000 {
        text.push_str(&format!("p{i} = {{ type = \"float\", bounds = [1.0, 0.0], colour = \"red\" }}\n"));
    }
    text.push_str("[objective]\nminimize = \"f\"\n[runner]\ncommand = \"true\"\n[orchestration]\nmax_trials = 1\n");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("many.toml"), &text).unwrap();
    let start = std::time::Instant::now();
    let out = std::process::Command::new(optx_bin())
        .args(["validate", "many.toml"])
        .current_dir(work.path())
        .output()
        .unwrap();
    // Quadratic work took minutes on such a file; linear work takes well under a second.
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    assert_eq!(code(&out), 2);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 52, "the first 50 errors, how many more, and the count: {}", &stderr[..500]);
    assert!(lines[0].starts_with("many.toml:4:"), "{}", lines[0]);
    assert_eq!(lines[50], "error: ... and 39950 more (fix these first)");
    assert_eq!(lines[51], "error: many.toml has 40000 errors");
}
