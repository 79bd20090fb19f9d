use super::*;

pub(crate) fn validator() -> jsonschema::Validator {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::draft202012::new(&schema).expect("a valid JSON Schema")
}

pub(crate) fn json_of(toml_text: &str) -> serde_json::Value {
    let v: toml::Value = toml::from_str(toml_text).expect("TOML");
    serde_json::to_value(v).expect("JSON")
}

fn errors(v: &jsonschema::Validator, toml_text: &str) -> Vec<String> {
    v.iter_errors(&json_of(toml_text)).map(|e| format!("{}: {e}", e.instance_path)).collect()
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files a user starts from: the examples (the starter file of `optx init` is checked
/// against the schema by its own tests).
fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(ROOT).join("../experiments");
    let out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("experiments/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    assert!(out.len() >= 5, "{out:?}");
    out
}

#[test]
fn every_example_validates_against_the_schema() {
    let v = validator();
    for (name, text) in examples() {
        let e = errors(&v, &text);
        assert!(e.is_empty(), "{name}: {e:?}");
    }
}

const GOOD: &str = r#"
[experiment]
name = "x"
[parameters]
lr = { type = "float", bounds = [1e-5, 1e-1], scaling = "log", digits = 4 }
n = { type = "int", bounds = [1, 8] }
opt = { type = "choice", values = ["adam", "sgd"] }
e = { type = "fixed", value = 3 }
[objective]
minimize = "loss"
[runner]
command = ["python3", "t.py", "{lr}"]
timeout = "2h"
[orchestration]
max_trials = 10
[early_stopping]
strategy = "percentile"
[global_stopping]
strategy = "no_improvement"
patience = 5
"#;

#[test]
fn misspelled_keys_wrong_types_and_a_missing_runner_are_rejected() {
    let v = validator();
    assert_eq!(errors(&v, GOOD), Vec::<String>::new());
    for (bad, why) in [
        (GOOD.replace("max_trials = 10", "max_trails = 10"), "a misspelled key"),
        (GOOD.replace("max_trials = 10", "max_trials = \"ten\""), "a string for an integer"),
        (GOOD.replace("digits = 4", "digits = 40"), "digits beyond 17"),
        (GOOD.replace("type = \"int\"", "type = \"integer\""), "an unknown parameter type"),
        (GOOD.replace("scaling = \"log\"", "scaling = \"ln\""), "an unknown scaling"),
        (GOOD.replace("[runner]\ncommand = [\"python3\", \"t.py\", \"{lr}\"]\ntimeout = \"2h\"\n", ""), "no runner"),
        (GOOD.replace("timeout = \"2h\"", "timeout = \"2h\"\nlibrary = \"x.so\""), "a plugin key in a command runner"),
        (GOOD.replace("strategy = \"percentile\"", "strategy = \"median\""), "an unknown strategy"),
    ] {
        assert!(!errors(&v, &bad).is_empty(), "{why} passes:\n{bad}");
    }
}

/// The keys of a table in the schema (following `$ref`s and the variants of a runner).
fn keys(schema: &serde_json::Value, def: &str) -> Vec<String> {
    let d = &schema["$defs"][def]["properties"];
    d.as_object().unwrap_or_else(|| panic!("no {def}")).keys().cloned().collect()
}

#[test]
fn the_schema_knows_every_key_the_file_reader_knows() {
    let s = schema();
    let has = |def: &str, known: &[&str]| {
        let k = keys(&s, def);
        for key in known {
            assert!(k.iter().any(|x| x == key), "`{key}` of {def} is missing from the schema: {k:?}");
        }
        for key in &k {
            assert!(known.contains(&key.as_str()), "`{key}` of {def} is in the schema, not in the reader");
        }
    };
    let root: Vec<String> = s["properties"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(root.len(), super::super::ROOT_KEYS.len());
    for k in super::super::ROOT_KEYS {
        assert!(root.iter().any(|r| r == k), "{k}");
    }
    has("CommandRunner", &super::super::COMMAND_KEYS);
    let shared = super::super::jobs::SHARED_KEYS;
    let external: Vec<&str> =
        ["kind"].iter().chain(super::super::EXTERNAL_KEYS.iter()).chain(shared.iter()).copied().collect();
    has("ExternalRunner", &external);
    let slurm: Vec<&str> =
        ["kind", "command"].iter().chain(super::super::SLURM_KEYS.iter()).chain(shared.iter()).copied().collect();
    has("SlurmRunner", &slurm);
    let plugin: Vec<&str> = ["kind"].iter().chain(super::super::PLUGIN_KEYS.iter()).copied().collect();
    has("PluginRunner", &plugin);
    has("EarlyStopping", &super::super::stopping::KEYS);
    has("Orchestration", &super::super::ORCHESTRATION_KEYS);
}
