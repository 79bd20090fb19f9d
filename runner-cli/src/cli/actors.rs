//! `ask`, `tell`, `attach` and `clean`: actors on the ledger beside running workers.

use super::*;

/// The store of `target` opened to act on it, with its experiment, joined as a worker
/// beside those that run it; its session id.
pub(super) fn act_on(target: &Path, line: &str) -> Result<(Box<dyn Ledger>, ExperimentSpec, u64, i64), CliError> {
    let (_, spec, path) = open_target(target)?;
    let mut store = store::open_existing(&path).map_err(CliError::usage)?;
    let seed = match store.experiment() {
        Ok(Some(e)) => e.seed,
        Ok(None) => return Err(CliError::usage(format!("{path} holds no experiment"))),
        Err(e) => return Err(CliError::runtime(e)),
    };
    let pid = std::process::id();
    let host = crate::exec::hostname();
    let me = store::NewWorker {
        command: line,
        pid,
        process_start: crate::exec::process_start_time(pid),
        host: &host,
        lease_seconds: spec.orchestration.worker_lease_seconds,
    };
    let session = store.join(&me, false, &scheduler::worker_alive).map_err(CliError::usage)?;
    Ok((store, spec, seed, session))
}

/// `name=value` pairs of the command line.
pub(super) fn pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>, CliError> {
    items
        .iter()
        .map(|i| match i.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::usage(format!("`{i}`: give {what} as name=value"))),
        })
        .collect()
}

/// `m=v` or `m=v:sem` values.
pub(super) fn reported(items: &[String]) -> Result<Vec<scheduler::Reported>, CliError> {
    pairs(items, "each metric")?
        .into_iter()
        .map(|(metric, v)| {
            let (mean, sem) = match v.split_once(':') {
                Some((m, s)) => (m, Some(s)),
                None => (v.as_str(), None),
            };
            let num = |x: &str| {
                x.trim().parse::<f64>().map_err(|_| CliError::usage(format!("`{metric}={v}`: `{x}` is not a number")))
            };
            Ok(scheduler::Reported { mean: num(mean)?, sem: sem.map(num).transpose()?, metric })
        })
        .collect()
}

pub(super) fn print_asked(a: &scheduler::Asked, json: bool) {
    if json {
        outln!("{}", serde_json::json!({"index": a.index, "parameters": a.parameters, "generation": a.generation}));
    } else {
        outln!("{}\t{}", a.index, report::params_inline(&a.parameters));
    }
}

pub(super) fn cmd_ask(target: &Path, count: u64, json: bool, line: &str) -> Outcome {
    out::must_be_read();
    let (mut store, spec, seed, session) = act_on(target, line)?;
    let asked = scheduler::ask(&spec, store.as_mut(), session, seed, count);
    let _ = store.leave(session, Some(if asked.is_ok() { 0 } else { 1 }));
    match asked {
        Ok(list) => {
            for a in &list {
                print_asked(a, json);
            }
            if (list.len() as u64) < count {
                eprintln!(
                    "optx: {} of {count} trial(s): the budget (max_trials = {}) or the search space is spent",
                    list.len(),
                    spec.orchestration.max_trials
                );
            }
            Ok(Done::Ok)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn cmd_tell(
    target: &Path,
    trial: u64,
    metrics: &[String],
    progression: Option<f64>,
    failed: Option<String>,
    abandon: Option<String>,
    line: &str,
) -> Outcome {
    out::must_be_read();
    let values = reported(metrics)?;
    let what = match (progression, failed, abandon) {
        (Some(p), _, _) => scheduler::Tell::Point { progression: p, values },
        (_, Some(why), _) => scheduler::Tell::Failed(why),
        (_, _, Some(why)) => scheduler::Tell::Abandon(why),
        _ => scheduler::Tell::Results(values),
    };
    let (mut store, spec, _, session) = act_on(target, line)?;
    let told = scheduler::tell(&spec, store.as_mut(), trial, &what);
    let _ = store.leave(session, Some(if told.is_ok() { 0 } else { 2 }));
    match told {
        Ok(scheduler::Told::Point) => {
            outln!("continue");
            Ok(Done::Ok)
        }
        Ok(scheduler::Told::Stop(reason)) => {
            outln!("stop");
            eprintln!("optx: trial {trial}: {reason}");
            Ok(Done::Ok)
        }
        Ok(scheduler::Told::Completed { feasible }) => {
            let note = if feasible { "" } else { " (infeasible)" };
            outln!("optx: trial {trial} completed{note}");
            Ok(Done::Ok)
        }
        Ok(scheduler::Told::Failed) => {
            outln!("optx: trial {trial} failed");
            Ok(Done::Ok)
        }
        Ok(scheduler::Told::Abandoned) => {
            outln!("optx: trial {trial} abandoned");
            Ok(Done::Ok)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn cmd_attach(target: &Path, params: &[String], results: &[String], line: &str) -> Outcome {
    out::must_be_read();
    let (given, results) = match (pairs(params, "each parameter"), reported(results)) {
        (Ok(g), Ok(r)) => (g, r),
        (Err(c), _) | (_, Err(c)) => return Err(c),
    };
    let (mut store, spec, _, session) = act_on(target, line)?;
    let done = scheduler::arm_of(&spec, &given).and_then(|arm| {
        let r = (!results.is_empty()).then_some(results.as_slice());
        scheduler::attach(&spec, store.as_mut(), session, &arm, r)
    });
    let _ = store.leave(session, Some(if done.is_ok() { 0 } else { 2 }));
    match done {
        Ok((a, told)) => {
            let how = if told.is_some() { "attached and completed" } else { "attached, running: tell its results" };
            outln!("optx: trial {} {how}: {}", a.index, report::params_inline(&a.parameters));
            Ok(Done::Ok)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn cmd_clean(target: &Path, dry_run: bool, line: &str) -> Outcome {
    out::must_be_read();
    let exe = exe()?;
    // A dry run only reads: it joins as nobody (joining marks the dead workers).
    let (mut store, spec, seed, session) = if dry_run {
        let (store, spec, _) = open_target(target)?;
        let seed = store.experiment().ok().flatten().map_or(0, |e| e.seed);
        (store, spec, seed, -1)
    } else {
        act_on(target, line)?
    };
    let done = scheduler::clean(&spec, store.as_mut(), session, seed, &exe, dry_run);
    if !dry_run {
        let _ = store.leave(session, Some(if done.is_ok() { 0 } else { 1 }));
    }
    match done {
        Ok(lines) => {
            for l in lines {
                outln!("optx: {l}");
            }
            Ok(Done::Ok)
        }
        Err(e) => Err(e.into()),
    }
}
