//! `run` and `resume`: load, check the command line's overrides, launch, and say how it ended.

use super::*;

/// The bounds the file's own values are held to hold for the command line's too.
pub(super) fn check_overrides(spec: &ExperimentSpec, o: &Overrides) -> Result<(), CliError> {
    if let Some(n) = o.parallelism {
        let local = matches!(spec.runner, crate::domain::RunnerSpec::Command(_));
        crate::domain::Orchestration::check_parallelism(n, local)
            .map_err(|why| CliError::usage(format!("--parallelism {why}")))?;
    }
    Ok(())
}

pub(super) fn exe() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::runtime(format!("cannot find the optx executable: {e}")))
}

/// How `run` takes part in the experiment: alone, or as one more worker.
pub(super) struct Worker {
    pub join: bool,
    pub max_trials: Option<u64>,
    pub detach: bool,
}

pub(super) fn cmd_run(
    file: &Path,
    o: Overrides,
    seed: Option<u64>,
    store: Option<PathBuf>,
    fresh: bool,
    worker: Worker,
    line: &str,
) -> Outcome {
    let (mut spec, text) = load(file)?;
    if let Some(s) = seed {
        spec.seed = Some(s);
    }
    if let Some(p) = store {
        spec.store = location(&p).for_experiment(&spec.name);
    }
    let overrides = apply(&mut spec, &o, &serde_json::json!({}));
    check_overrides(&spec, &o)?;
    spec.orchestration.max_trials_per_worker = worker.max_trials;
    if worker.detach && !matches!(spec.runner, crate::domain::RunnerSpec::External(_)) {
        return Err(CliError::usage(format!(
                "{}: --detach needs a runner whose jobs outlive optx (`kind = \"external\"` or `\"slurm\"`): the trials of this runner end with optx",
                file.display()
            ),
        ));
    }
    spec.orchestration.detach = worker.detach;
    let exe = exe()?;
    let spec_path = absolute(file);
    start(
        Launch {
            spec,
            spec_text: text,
            spec_path,
            resume: false,
            fresh,
            join: worker.join,
            exe,
            command_line: line.into(),
            overrides,
        },
        &o,
    )
}

pub(super) fn cmd_resume(
    target: &Path,
    o: Overrides,
    store: Option<PathBuf>,
    flags: (bool, bool),
    line: &str,
) -> Outcome {
    let (allow_changes, ignore_global_stopping) = flags;
    let store_path = match (&store, is_store(target)) {
        (Some(p), true) => location(p),
        (None, true) => location(target),
        (_, false) => match load(target) {
            // A file names its experiment: a server store of it is that experiment's.
            Ok((spec, _)) => match store {
                Some(p) => location(&p).for_experiment(&spec.name),
                None => spec.store,
            },
            Err(c) => return Err(c),
        },
    };
    let st = match store::open_read(&store_path) {
        Ok(s) => s,
        Err(e) => {
            let advice = match &e {
                crate::store::StoreError::Unusable(m) if m.starts_with("there is no store") => {
                    ": nothing to resume (start the experiment with `optx run FILE.toml`)"
                }
                _ => "",
            };
            return Err(CliError::usage(format!("{e}{advice}")));
        }
    };
    let exp = match st.experiment() {
        Ok(Some(e)) => e,
        Ok(None) => return Err(CliError::usage(format!("{store_path} holds no experiment: start it with `optx run`"))),
        Err(e) => return Err(CliError::runtime(e)),
    };
    let store_path = named(store_path, st.as_ref());
    drop(st);
    let (mut spec, text, spec_path) = if is_store(target) {
        match config::parse(&exp.spec_toml, &exp.spec_path.display().to_string(), &exp.base_dir) {
            Ok(s) => (s, exp.spec_toml.clone(), exp.spec_path.clone()),
            Err(e) => return Err(CliError::runtime(format!("the stored experiment file no longer parses:\n{e}"))),
        }
    } else {
        let (spec, text) = load(target)?;
        let changes = config::fixed_part_changes(&exp.spec_toml, &text);
        if !changes.is_empty() && !allow_changes {
            eprintln!(
                "error: {} changed since the experiment started, in parts that may not change on resume:",
                target.display()
            );
            for c in &changes {
                eprintln!("  {c}");
            }
            eprintln!("Resume from the store (`optx resume {store_path}`) to run as before, or pass --allow-changes to accept the changes.");
            return Err(CliError::Reported);
        }
        if !changes.is_empty() {
            eprintln!("optx: accepting {} change(s) to the experiment (--allow-changes)", changes.len());
        }
        (spec, text, absolute(target))
    };
    spec.store = store_path;
    // From the store, the overrides of earlier command lines still hold; from a file, the
    // file's values win (only this command line's overrides apply).
    let kept = if is_store(target) {
        exp.overrides.clone()
    } else {
        for (key, value) in exp.overrides.as_object().into_iter().flatten() {
            let flag = key.replace('_', "-");
            if (key == "max_trials" && o.max_trials.is_none()) || (key == "parallelism" && o.parallelism.is_none()) {
                eprintln!(
                    "optx: `--{flag} {value}` of an earlier command line no longer applies: {} is resumed as it says",
                    target.display()
                );
            }
        }
        serde_json::json!({})
    };
    let overrides = apply(&mut spec, &o, &kept);
    check_overrides(&spec, &o)?;
    spec.orchestration.ignore_global_stopping = ignore_global_stopping;
    let exe = exe()?;
    start(
        Launch {
            spec,
            spec_text: text,
            spec_path,
            resume: true,
            fresh: false,
            join: false,
            exe,
            command_line: line.into(),
            overrides,
        },
        &o,
    )
}

pub(super) fn start(l: Launch, o: &Overrides) -> Outcome {
    let store_path = l.spec.store.clone();
    let spec = l.spec.clone();
    let mut printer = events::Printer::new(o.quiet, o.events_json);
    let end = scheduler::launch(l, &mut printer);
    printer.finish();
    let done = match &end {
        Ok(RunEnd::Done | RunEnd::Detached(_) | RunEnd::Deadline(_)) => Done::Ok,
        Ok(RunEnd::FailureRate | RunEnd::TooManyLost) => Done::Stopped,
        Ok(RunEnd::Interrupted) => Done::Interrupted,
        Err(RunError::Runtime(m)) => return Err(CliError::runtime(m)),
        Err(e) => return Err(CliError::usage(e)),
    };
    // The summary, from the store as committed (aggregates: a long run is not loaded).
    // Read-write, as the run was: its connection, the last, leaves the store one file.
    if let Ok(store) = store::open_existing(&store_path) {
        let summary = (|| -> Result<report::Summary, crate::store::StoreError> {
            let mut counts = std::collections::BTreeMap::new();
            for (status, lost, n) in store.status_counts()? {
                *counts.entry(if lost { "LOST".to_string() } else { status }).or_insert(0) += n;
            }
            Ok(report::Summary { counts, feasible: store.feasible_count()?, best: store.best(&spec.goal)? })
        })();
        if let (Ok(summary), true) = (&summary, o.events_json) {
            // The last event: how the run ended and what it found, for scripts.
            let end = match &end {
                Ok(RunEnd::Interrupted) => "interrupted",
                Ok(RunEnd::FailureRate) => "failure_rate",
                Ok(RunEnd::TooManyLost) => "too_many_lost",
                Ok(RunEnd::Deadline(_)) => "timeout_hours",
                Ok(RunEnd::Detached(_)) => "detached",
                _ => "done",
            };
            let best: Vec<serde_json::Value> = summary
                .best
                .iter()
                .map(|(i, v, p)| serde_json::json!({"trial": i, "objectives": v, "parameters": p}))
                .collect();
            sayln!(
                "{}",
                serde_json::json!({"event": "summary", "end": end, "exit_code": exit_code(Ok(done)), "trials": summary.counts,
                    "feasible": summary.feasible, "best": best, "store": store_path.to_string()})
            );
        }
        if let (Ok(summary), false) = (summary, o.events_json) {
            let verb = match end {
                Ok(RunEnd::Interrupted) => format!("interrupted (resume with `optx resume {store_path}`)"),
                Ok(RunEnd::FailureRate) => "stopped: too many trials failed".into(),
                Ok(RunEnd::TooManyLost) => "stopped: too many trials were lost".into(),
                Ok(RunEnd::Deadline(n)) => {
                    format!("timeout_hours reached: {n} trial(s) left running; `optx resume {store_path}` follows them")
                }
                Ok(RunEnd::Detached(n)) => format!(
                    "detached: {n} trial(s) run on without optx; `optx resume {store_path}` collects them and goes on"
                ),
                _ => "done".into(),
            };
            sayln!("optx: {verb}: {}", report::summary_line(&spec, &summary));
            sayln!("optx: {}", report::best_line(&spec, &summary));
        }
    }
    Ok(done)
}
