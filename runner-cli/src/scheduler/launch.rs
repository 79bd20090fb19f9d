//! Starting a run or a resume: the store, its ownership, the session, the runner, the
//! signal thread; then the dispatcher loop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::unbounded;

use super::{drive, EventSink, RunEnd, RunEvent};
use crate::domain::{ExperimentSpec, RunnerSpec};
use crate::exec;
use crate::generate::Generator;
use crate::runners::{CommandRunner, PluginMetrics, PluginRunner, PollSchedule, TrialRunner};
use crate::store::{Owner, Store, StoreError};

/// What `optx run` / `optx resume` start with.
pub struct Launch {
    pub spec: ExperimentSpec,
    /// The experiment file's text, stored so that `resume STORE.db` needs nothing else.
    pub spec_text: String,
    pub spec_path: PathBuf,
    pub resume: bool,
    /// `--fresh`: set an existing store aside (renamed, never deleted) and start anew.
    pub fresh: bool,
    /// The optx executable (it also runs the shepherd).
    pub exe: PathBuf,
    pub command_line: String,
    /// Command-line overrides already applied to `spec`, kept in the store for resumes.
    pub overrides: serde_json::Value,
}

#[derive(Debug)]
pub enum RunError {
    /// Bad input: exit 2.
    Usage(String),
    /// The store belongs to another live optx: exit 2.
    Owned { store: PathBuf, owner: Owner },
    /// Something failed at run time: exit 1.
    Runtime(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(s) | RunError::Runtime(s) => f.write_str(s),
            RunError::Owned { store, owner } => write!(
                f,
                "{} is in use by another optx (pid {} on {}, since {}); wait for it to end, or stop it first",
                store.display(),
                owner.pid,
                owner.host,
                owner.since
            ),
        }
    }
}

impl std::error::Error for RunError {}

fn store_err(path: &Path) -> impl Fn(StoreError) -> RunError + '_ {
    move |e| match e {
        StoreError::Owned(owner) => RunError::Owned { store: path.to_path_buf(), owner },
        e => RunError::Runtime(format!("{}: {e}", path.display())),
    }
}

/// This process, as a store owner.
pub fn me() -> Owner {
    let pid = std::process::id();
    Owner { pid, process_start: exec::process_start_time(pid), host: exec::hostname(), since: String::new() }
}

/// Rename a store, its WAL files and its trial dirs to `*.bak-<time>`.
fn set_aside(spec: &ExperimentSpec) -> Result<Vec<PathBuf>, RunError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
    let mut moved = Vec::new();
    let db = spec.store_path.clone();
    let mut paths = vec![db.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        paths.push(PathBuf::from(p));
    }
    paths.push(spec.trials_root());
    for p in paths {
        if p.exists() {
            let mut to = p.clone().into_os_string();
            to.push(format!(".bak-{stamp}"));
            std::fs::rename(&p, &to).map_err(|e| RunError::Runtime(format!("cannot rename {}: {e}", p.display())))?;
            moved.push(PathBuf::from(to));
        }
    }
    Ok(moved)
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)) % 1_000_000_007
}

/// Run (or resume) an experiment to its end. Returns how it ended and the store path.
pub fn launch(l: Launch, sink: &mut dyn EventSink) -> Result<RunEnd, RunError> {
    let spec = &l.spec;
    let path = spec.store_path.clone();
    let me = me();
    let alive = |pid: u32, start: Option<u64>| exec::alive(pid, start);
    let mut store = Store::open(&path, spec.durability).map_err(store_err(&path))?;
    store.acquire(&me, &alive).map_err(store_err(&path))?;
    let existing = store.experiment().map_err(store_err(&path))?;
    let has_trials = store.trial_counts().map_err(store_err(&path))?.0 > 0;
    let mut store = match (l.resume, existing.is_some() || has_trials) {
        (false, true) if l.fresh => {
            store.release(&me).map_err(store_err(&path))?;
            drop(store);
            let moved = set_aside(spec)?;
            for m in &moved {
                sink.event(&RunEvent::Notice(format!("--fresh: set aside {}", m.display())));
            }
            let mut s = Store::open(&path, spec.durability).map_err(store_err(&path))?;
            s.acquire(&me, &alive).map_err(store_err(&path))?;
            s
        }
        (false, true) => {
            let _ = store.release(&me);
            return Err(RunError::Usage(format!(
                "{} already holds the experiment `{}`: continue it with `optx resume {}`, or start over with `optx run --fresh` (the old store is kept as a backup)",
                path.display(),
                existing.map(|e| e.name).unwrap_or_default(),
                l.spec_path.display()
            )));
        }
        (true, false) => {
            let _ = store.release(&me);
            return Err(RunError::Usage(format!(
                "{} holds no experiment yet: start it with `optx run`",
                path.display()
            )));
        }
        _ => store,
    };
    let result = run_owned(&l, &mut store, sink);
    let _ = store.release(&me);
    result
}

fn run_owned(l: &Launch, store: &mut Store, sink: &mut dyn EventSink) -> Result<RunEnd, RunError> {
    let spec = &l.spec;
    let path = spec.store_path.clone();
    let stored_seed = store.experiment().map_err(store_err(&path))?.map(|e| e.seed);
    let seed = match (l.resume, stored_seed) {
        (true, Some(s)) => s,
        _ => spec.seed.unwrap_or_else(random_seed),
    };
    store
        .save_experiment(&spec.name, &l.spec_text, &l.spec_path, &spec.base_dir, seed, &l.overrides)
        .map_err(store_err(&path))?;
    let session = store.begin_session(&l.command_line, &me()).map_err(store_err(&path))?;
    let existing = store.trial_counts().map_err(store_err(&path))?.1;
    sink.event(&RunEvent::Started {
        name: spec.name.clone(),
        store: path.clone(),
        max_trials: spec.orchestration.max_trials,
        parallelism: spec.orchestration.parallelism,
        method: Generator::describe(spec),
        existing,
    });
    let o = &spec.orchestration;
    let polls = PollSchedule {
        initial: Duration::from_secs_f64(o.initial_seconds_between_polls),
        factor: o.seconds_between_polls_backoff_factor,
        max: Duration::from_secs_f64(o.max_seconds_between_polls.max(o.initial_seconds_between_polls)),
    };
    // Plugins are loaded and opened before any trial runs: a bad one is bad input (exit 2).
    let metrics = PluginMetrics::open(spec).map_err(RunError::Usage)?;
    let runner: Arc<dyn TrialRunner> = match &spec.runner {
        RunnerSpec::Command(_) => Arc::new(
            CommandRunner::new(spec, polls, &l.exe, metrics)
                .map_err(|e| RunError::Runtime(format!("cannot start the process that runs trials: {e}")))?,
        ),
        RunnerSpec::Plugin(_) => Arc::new(PluginRunner::new(spec, polls, metrics).map_err(RunError::Usage)?),
    };
    std::fs::create_dir_all(spec.trials_root())
        .map_err(|e| RunError::Runtime(format!("cannot create {}: {e}", spec.trials_root().display())))?;

    // Signals reach the dispatcher as messages; it counts them.
    let (sig_tx, sig_rx) = unbounded();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| RunError::Runtime(format!("cannot watch signals: {e}")))?;
    let handle = signals.handle();
    let sig_thread = std::thread::spawn(move || {
        for s in signals.forever() {
            if sig_tx.send(s).is_err() {
                break;
            }
        }
    });
    let outcome = drive(spec, store, runner, seed, session, sink, &sig_rx);
    handle.close();
    let _ = sig_thread.join();
    let end = outcome.map_err(store_err(&path))?;
    let code = match end {
        RunEnd::Done => 0,
        RunEnd::FailureRate => 1,
        RunEnd::Interrupted => 130,
    };
    store.end_session(session, code).map_err(store_err(&path))?;
    Ok(end)
}
