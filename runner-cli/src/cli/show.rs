//! `report`, `backup` and `validate`.

use super::*;

pub(super) fn cmd_report(target: &Path, output: &Path) -> Outcome {
    let (store, spec, path) = open_target(target)?;
    let (trials, obs, workers) = match (store.trials(), store.observations(), store.workers()) {
        (Ok(t), Ok(o), Ok(w)) => (t, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(CliError::runtime(e)),
    };
    // The curves to draw: the early-stopping metric's, else the first objective's metric.
    let metric = spec
        .early_stopping
        .as_ref()
        .map(|e| e.metric.clone())
        .or_else(|| spec.goal.objectives.first().and_then(|o| o.terms.first()).map(|t| t.0.clone()))
        .unwrap_or_default();
    // As the rule compared them: sorted, without what a stopped trial reported after.
    let stored = crate::stopping::stored_curves(&metric, &obs, &crate::stopping::stopped_at(&trials));
    let curves: std::collections::BTreeMap<u64, Vec<(f64, f64)>> =
        stored.iter().map(|c| (c.trial, c.points.clone())).collect();
    let mut snap = Snapshot::new(&spec, &trials, &obs);
    snap.workers = workers.iter().map(|w| worker_view(w, &trials)).collect();
    let (importance, contour) = super::model::importance_and_contour(&snap);
    let extra = report::html::Extra {
        importance,
        contour,
        curves: &curves,
        curve_metric: metric,
        generated: format!("written {} by optx {} from {path}", store::now(), env!("CARGO_PKG_VERSION")),
    };
    let page = report::html::report(&snap, &extra);
    // Written beside, then renamed: a report is whole or not there.
    let tmp = output.with_extension("html.partial");
    if let Err(e) = std::fs::write(&tmp, page.as_bytes()).and_then(|_| std::fs::rename(&tmp, output)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::runtime(format!("writing {}: {e}", output.display())));
    }
    eprintln!("optx: wrote {} ({} trials, {} kB)", output.display(), trials.len(), page.len() / 1024);
    Ok(Done::Ok)
}

pub(super) fn cmd_backup(target: &Path, dest: &Path) -> Outcome {
    let (store, _, path) = open_target(target)?;
    // A store that cannot be used (this kind of destination, say) is bad input.
    let error = |e: crate::store::StoreError| match e {
        crate::store::StoreError::Unusable(_) => CliError::usage(e),
        _ => CliError::runtime(e),
    };
    let dest = match location(dest) {
        d @ StoreLocation::File(_) => d,
        // Into a server database: under the experiment's name unless the URL names another.
        d => match store.experiment() {
            Ok(Some(e)) => d.for_experiment(&e.name),
            _ => d,
        },
    };
    if let Err(e) = store::copy(store.as_ref(), &dest) {
        return Err(error(e));
    }
    match store::open_read(&dest).and_then(|b| b.trial_counts()) {
        Ok((n, _)) => {
            outln!("optx: copied {path} ({n} trials) to {dest}");
            Ok(Done::Ok)
        }
        Err(e) => Err(CliError::runtime(format!("the copy {dest} cannot be read back: {e}"))),
    }
}

pub(super) fn cmd_validate(file: &Path) -> Outcome {
    let (spec, _) = load(file)?;
    use crate::domain::{Domain, RunnerSpec, Segment};
    let plugins = match crate::runners::plugin::check_all(&spec) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Err(CliError::Reported);
        }
    };
    if let RunnerSpec::Command(c) = &spec.runner {
        crate::runners::program::check_program(c, &spec.base_dir).map_err(CliError::Usage)?;
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "{}: ok", file.display());
    let _ = writeln!(out, "experiment:  {}", spec.name);
    let _ = writeln!(out, "objective:   {}", spec.goal.describe());
    if !spec.goal.thresholds.is_empty() {
        let t: Vec<String> = spec.goal.thresholds.iter().map(|t| t.to_string()).collect();
        let _ = writeln!(out, "thresholds:  {}", t.join(", "));
    }
    let _ = writeln!(out, "parameters:  {} searched dimension(s)", spec.space.dims());
    let w = spec.space.parameters.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &spec.space.parameters {
        let d = match &p.domain {
            Domain::Float { lo, hi, log, step, digits } => format!(
                "float [{lo}, {hi}]{}{}",
                if *log { " log" } else { "" },
                match step {
                    Some(s) => format!(" step {s}"),
                    None => format!(" ({digits} significant digits)"),
                }
            ),
            Domain::Int { lo, hi, log, step } => format!(
                "int [{lo}, {hi}]{}{}",
                if *log { " log" } else { "" },
                step.map(|s| format!(" step {s}")).unwrap_or_default()
            ),
            Domain::Choice { values, ordered } => format!(
                "{}choice {{{}}}",
                if *ordered { "ordered " } else { "" },
                values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Domain::Fixed { value } => format!("fixed {value}"),
        };
        let _ = writeln!(out, "  {:w$}  {d}", p.name);
    }
    for c in &spec.space.constraints {
        let _ = writeln!(out, "constraint:  {}", c.text);
    }
    for c in &spec.outcome_constraints {
        let _ = writeln!(out, "outcome:     {c}");
    }
    match &spec.runner {
        RunnerSpec::Command(c) => {
            let words: Vec<String> = c
                .argv
                .iter()
                .map(|t| {
                    t.segments
                        .iter()
                        .map(|s| match s {
                            Segment::Literal(l) => l.clone(),
                            Segment::Placeholder(p) => format!("{{{p}}}"),
                        })
                        .collect()
                })
                .collect();
            let shell = if c.shell { " (through sh -c)" } else { "" };
            let _ = writeln!(out, "runner:      command{shell}: {}", words.join(" "));
        }
        RunnerSpec::Plugin(p) => {
            let _ = writeln!(out, "runner:      plugin `{}` in {}", p.plugin.name, p.plugin.library.display());
        }
        RunnerSpec::External(e) => {
            let what = match &e.system {
                crate::domain::JobSystem::Slurm { .. } => "slurm: sbatch, one squeue per poll, scancel",
                crate::domain::JobSystem::Commands { status_all: Some(_), .. } => {
                    "external: submit, status_all, cancel"
                }
                crate::domain::JobSystem::Commands { .. } => "external: submit, status, cancel",
            };
            let _ = writeln!(out, "runner:      {what}");
        }
    }
    for line in &plugins {
        let _ = writeln!(out, "plugin:      {line}");
    }
    let o = &spec.orchestration;
    let _ = writeln!(out, "trials:      {} (parallelism {})", o.max_trials, o.parallelism);
    let _ = writeln!(out, "generation:  {}", Generator::describe(&spec));
    if let Some(n) = spec.space.cardinality() {
        let _ = writeln!(out, "space:       {n} distinct arms");
    }
    let _ = writeln!(out, "store:       {}", spec.store);
    out!("{out}");
    Ok(Done::Ok)
}
