//! What a command works on: the experiment file (loaded, its errors printed), and the store
//! a TARGET names (a store, or an experiment file), opened with the experiment it holds.

use super::*;

/// At most this many errors of a file are printed (the first ones, in file order).
pub(super) const ERRORS_SHOWN: usize = 50;

pub(super) fn load(file: &Path) -> Result<(ExperimentSpec, String), CliError> {
    match config::load(file) {
        Ok((spec, text)) => {
            for w in &spec.warnings {
                eprintln!("warning: {w}");
            }
            Ok((spec, text))
        }
        Err(e) => {
            let mut err = std::io::stderr().lock();
            for line in e.0.iter().take(ERRORS_SHOWN) {
                let _ = writeln!(err, "{line}");
            }
            let n = e.0.len();
            if n > ERRORS_SHOWN {
                let _ = writeln!(err, "error: ... and {} more (fix these first)", n - ERRORS_SHOWN);
            }
            let _ = writeln!(err, "error: {} has {n} error{}", file.display(), if n == 1 { "" } else { "s" });
            Err(CliError::Reported)
        }
    }
}

pub(super) fn apply(spec: &mut ExperimentSpec, o: &Overrides, stored: &serde_json::Value) -> serde_json::Value {
    let mut kept = stored.as_object().cloned().unwrap_or_default();
    if let Some(n) = o.max_trials {
        kept.insert("max_trials".into(), n.into());
    }
    if let Some(n) = o.parallelism {
        kept.insert("parallelism".into(), n.into());
    }
    if let Some(n) = kept.get("max_trials").and_then(|v| v.as_u64()) {
        spec.orchestration.max_trials = n;
    }
    if let Some(n) = kept.get("parallelism").and_then(|v| v.as_u64()) {
        spec.orchestration.parallelism = n as usize;
    }
    serde_json::Value::Object(kept)
}

pub(super) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A store named on the command line: a server URL, or a file.
pub(super) fn location(p: &Path) -> StoreLocation {
    let s = p.to_string_lossy();
    if crate::domain::is_server_url(&s) {
        StoreLocation::parse(&s, Path::new(""))
    } else {
        StoreLocation::File(absolute(p))
    }
}

pub(super) fn is_store(p: &Path) -> bool {
    crate::domain::is_server_url(&p.to_string_lossy()) || p.extension().is_some_and(|e| e != "toml")
}

/// A server store opened without its experiment's name knows it once open.
/// (Its schema's name, which the store's location says: not the name its file gives, which
/// a copy under another name keeps.)
pub(super) fn named(path: StoreLocation, store: &dyn Ledger) -> StoreLocation {
    let StoreLocation::Server { experiment: None, .. } = &path else { return path };
    match StoreLocation::parse(&store.location(), Path::new("")) {
        StoreLocation::Server { experiment: Some(e), .. } => path.for_experiment(&e),
        _ => path,
    }
}

/// Open the store of TARGET (a store, or an experiment file) with the spec it holds.
pub(super) fn open_target(target: &Path) -> Result<(Box<dyn Ledger>, ExperimentSpec, StoreLocation), CliError> {
    let path = if is_store(target) {
        location(target)
    } else {
        let (spec, _) = load(target)?;
        spec.store
    };
    let store = store::open_read(&path).map_err(|e| {
        let hint = match &e {
            crate::store::StoreError::Unusable(m) if m.starts_with("there is no store") && !is_store(target) => {
                format!(" (has `optx run {}` run yet?)", target.display())
            }
            _ => String::new(),
        };
        CliError::usage(format!("{e}{hint}"))
    })?;
    let exp = match store.experiment() {
        Ok(Some(e)) => e,
        Ok(None) => return Err(CliError::usage(format!("{path} holds no experiment"))),
        Err(e) => return Err(CliError::runtime(e)),
    };
    let mut spec = config::parse(&exp.spec_toml, &exp.spec_path.display().to_string(), &exp.base_dir)
        .map_err(|e| CliError::runtime(format!("the experiment file stored in {path} no longer parses:\n{e}")))?;
    let path = named(path, store.as_ref());
    spec.store = path.clone();
    apply(&mut spec, &Overrides::default(), &exp.overrides);
    Ok((store, spec, path))
}

pub(super) fn with_store(target: &Path, f: impl FnOnce(&Snapshot, &StoreLocation) -> Outcome) -> Outcome {
    let (store, spec, path) = open_target(target)?;
    // The final values and the newest point of each running trial: never every point of
    // every curve (a store may hold millions).
    let (trials, finals, workers) = match (store.trials(), store.final_observations(), store.workers()) {
        (Ok(t), Ok(o), Ok(w)) => (t, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(CliError::runtime(e)),
    };
    let open: Vec<u64> = trials.iter().filter(|t| !t.status.is_terminal()).map(|t| t.index).collect();
    let latest = match store.latest_points(&open) {
        Ok(l) => l,
        Err(e) => return Err(CliError::runtime(e)),
    };
    let mut snap = Snapshot::new(&spec, &trials, &finals);
    snap.latest = latest;
    snap.workers = workers.iter().map(|w| worker_view(w, &trials)).collect();
    f(&snap, &path)
}

/// A worker as the reports show it: its state decided here (liveness needs the processes).
pub(super) fn worker_view(w: &crate::store::Worker, trials: &[crate::domain::Trial]) -> report::WorkerView {
    let state = if let Some(code) = w.exit_code.filter(|_| w.ended_at.is_some()) {
        format!("ended, exit {code}")
    } else if w.ended_at.is_some() {
        "ended".into()
    } else if w.taken_over.is_some() {
        "dead (its trials were taken over)".into()
    } else if scheduler::worker_alive(w) {
        "live".into()
    } else {
        "dead (`optx resume` takes its trials over)".into()
    };
    let held = trials.iter().filter(|t| !t.status.is_terminal() && t.holder == Some(w.id)).count();
    report::WorkerView {
        id: w.id,
        host: w.host.clone(),
        pid: w.pid,
        started: w.started_at.clone(),
        renewed: w.renewed_at.clone(),
        held,
        state,
    }
}
