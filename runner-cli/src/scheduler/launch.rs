//! Starting a run or a resume: the store, its ownership, the session, the runner, the
//! signal thread; then the dispatcher loop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::unbounded;

use super::{drive, EventSink, Interrupts, RunEnd, RunEvent};
use crate::domain::{ExperimentSpec, RunnerSpec, StoreLocation};
use crate::exec;
use crate::generate::Generator;
use crate::runners::external::external_runner;
use crate::runners::{plugin_runner, CommandRunner, PluginMetrics, PollSchedule, TrialRunner};
use crate::store::{self, Ledger, LedgerExt, NewWorker, StoreError, Worker};

/// What `optx run` / `optx resume` start with.
pub struct Launch {
    pub spec: ExperimentSpec,
    /// The experiment file's text, stored so that `resume STORE.db` needs nothing else.
    pub spec_text: String,
    pub spec_path: PathBuf,
    pub resume: bool,
    /// `--fresh`: set an existing store aside (renamed, never deleted) and start anew.
    pub fresh: bool,
    /// `--join`: one more worker beside those on the store (else it must be free).
    pub join: bool,
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
    Owned { store: StoreLocation, owner: Box<Worker> },
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
                store, owner.pid, owner.host, owner.started_at
            ),
        }
    }
}

impl std::error::Error for RunError {}

fn store_err(path: &StoreLocation) -> impl Fn(StoreError) -> RunError + '_ {
    move |e| match e {
        StoreError::Owned(owner) => RunError::Owned { store: path.clone(), owner },
        StoreError::Unusable(m) => RunError::Usage(m),
        e => RunError::Runtime(format!("{path}: {e}")),
    }
}

/// Whether a worker of the store still lives: its lease runs, and on this host its
/// process too (a process gone is dead at once; one frozen past its lease is dead too).
pub fn worker_alive(w: &Worker) -> bool {
    w.lease_runs(std::time::SystemTime::now()) && (w.host != exec::hostname() || exec::alive(w.pid, w.process_start))
}

/// Rename `paths` (those that exist) to `<path><suffix>`, with one suffix for all that no
/// existing name has: `.bak-<time>`, then `.bak-<time>-2`, ... A rename never replaces
/// anything (`RENAME_NOREPLACE`): if a name is taken meanwhile, what was moved goes back
/// and the next suffix is tried.
fn set_aside_as(paths: &[PathBuf], what: &str) -> Result<Vec<PathBuf>, RunError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
    let present: Vec<&PathBuf> = paths.iter().filter(|p| p.symlink_metadata().is_ok()).collect();
    'suffix: for n in 1..1000 {
        let suffix = if n == 1 { format!(".{what}-{stamp}") } else { format!(".{what}-{stamp}-{n}") };
        let target = |p: &PathBuf| {
            let mut to = p.clone().into_os_string();
            to.push(&suffix);
            PathBuf::from(to)
        };
        if present.iter().any(|p| target(p).symlink_metadata().is_ok()) {
            continue;
        }
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        for p in &present {
            let to = target(p);
            match renameat_with(CWD, p.as_path(), CWD, &to, RenameFlags::NOREPLACE) {
                Ok(()) => moved.push(((*p).clone(), to)),
                Err(e) => {
                    for (from, to) in moved.iter().rev() {
                        if let Err(back) = renameat_with(CWD, to, CWD, from, RenameFlags::NOREPLACE) {
                            return Err(RunError::Runtime(format!(
                                "cannot rename {} back to {} after a failed move ({back}): move it back by hand",
                                to.display(),
                                from.display()
                            )));
                        }
                    }
                    if e == rustix::io::Errno::EXIST {
                        continue 'suffix;
                    }
                    return Err(RunError::Runtime(format!("cannot rename {}: {e}", p.display())));
                }
            }
        }
        return Ok(moved.into_iter().map(|(_, to)| to).collect());
    }
    Err(RunError::Runtime("no free name to set the old store aside".into()))
}

/// The store's files and its trial dirs, as `--fresh` sets them aside.
fn store_files(spec: &ExperimentSpec) -> Vec<PathBuf> {
    let Some(db) = spec.store.file() else { return vec![spec.trials_root()] };
    let db = db.to_path_buf();
    let mut paths = vec![db.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        paths.push(PathBuf::from(p));
    }
    paths.push(spec.trials_root());
    paths
}

/// `--fresh` on a store whose trials still run (optx was killed): they belong to the
/// experiment being set aside, so they are stopped (TERM, grace, KILL) and recorded as
/// lost in the old store, rather than left to compete with the new run's trials.
fn stop_old_trials(store: &mut dyn Ledger, spec: &ExperimentSpec, sink: &mut dyn EventSink) -> Result<(), StoreError> {
    let id = store.id()?;
    let open: Vec<_> = store.trials()?.into_iter().filter(|t| !t.status.is_terminal()).collect();
    let grace = match &spec.runner {
        RunnerSpec::Command(c) => c.stop_grace,
        _ => Duration::from_secs(10),
    };
    let mut stopped = Vec::new();
    for t in &open {
        let dir = spec.trials_root().join(t.index.to_string());
        let token = exec::token(&id, t.index);
        let run = match exec::read_process(&dir, &token) {
            // A record cut short: the process, if any, is found by what it carries.
            st if st.run.is_none() && st.exists && !st.claimed => {
                exec::find_trial_process(&dir.join(exec::STDOUT_FILE), &token)
            }
            st => st.run,
        };
        if let Some(run) = run.filter(|r| exec::alive(r.pid, r.start)) {
            exec::kill_group(run.pid, false);
            stopped.push(run);
        }
    }
    if !stopped.is_empty() {
        let pids: Vec<String> = stopped.iter().map(|r| r.pid.to_string()).collect();
        sink.event(&RunEvent::Notice(format!(
            "--fresh: stopping {} trial(s) of the old run that still run (pid {})",
            stopped.len(),
            pids.join(", ")
        )));
        let end = std::time::Instant::now() + grace;
        while stopped.iter().any(|r| exec::group_exists(r.pid)) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        for r in &stopped {
            exec::kill_group(r.pid, true);
        }
    }
    store.tx(|tx| {
        for t in &open {
            let data = crate::store::TransitionData {
                reason: Some("the store was set aside by `optx run --fresh` while this trial was not finished"),
                lost: true,
                ..Default::default()
            };
            tx.transition(t.index, t.status, crate::domain::TrialStatus::Failed, &data)?;
        }
        Ok(())
    })
}

/// The file in a trials root that names the store its dirs belong to.
const ROOT_MARK: &str = ".optx-store";

/// Make `<store>.trials/` this store's: a root left by another store (one deleted, or
/// emptied, or replaced) is set aside, never reused, so that no new trial reads an old
/// trial's files or overwrites them.
fn claim_trials_root(spec: &ExperimentSpec, store: &dyn Ledger, sink: &mut dyn EventSink) -> Result<(), RunError> {
    let root = spec.trials_root();
    let path = &spec.store;
    let id = store.id().map_err(store_err(path))?;
    let mark = root.join(ROOT_MARK);
    let marked: Option<String> = std::fs::read_to_string(&mark)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["store_id"].as_str().map(str::to_string));
    let has_content = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
    let has_trials = store.trial_counts().map_err(store_err(path))?.0 > 0;
    let foreign = match &marked {
        Some(m) => *m != id,
        // Trial dirs of an optx from before the mark: this store's if it has trials.
        None => has_content && !has_trials,
    };
    if foreign {
        for m in set_aside_as(std::slice::from_ref(&root), "old")? {
            sink.event(&RunEvent::Notice(format!(
                "{} held the trial dirs of another store; set aside as {}",
                root.display(),
                m.display()
            )));
        }
    }
    if marked.as_deref() != Some(id.as_str()) {
        std::fs::create_dir_all(&root)
            .map_err(|e| RunError::Runtime(format!("cannot create {}: {e}", root.display())))?;
        let text = serde_json::json!({"store_id": id, "store": path.to_string()}).to_string();
        std::fs::write(&mark, text).map_err(|e| RunError::Runtime(format!("cannot write {}: {e}", mark.display())))?;
    }
    Ok(())
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)) % 1_000_000_007
}

/// The runner of the experiment, with its plugins loaded and opened: a bad one is bad
/// input (exit 2), found before anything is written.
pub(super) fn runner_for(spec: &ExperimentSpec, exe: &Path) -> Result<Arc<dyn TrialRunner>, RunError> {
    let o = &spec.orchestration;
    let polls = PollSchedule {
        initial: Duration::from_secs_f64(o.initial_seconds_between_polls),
        factor: o.seconds_between_polls_backoff_factor,
        max: Duration::from_secs_f64(o.max_seconds_between_polls.max(o.initial_seconds_between_polls)),
    };
    let metrics = PluginMetrics::open(spec).map_err(RunError::Usage)?;
    Ok(match &spec.runner {
        RunnerSpec::Command(_) => Arc::new(
            CommandRunner::new(spec, polls, exe, metrics)
                .map_err(|e| RunError::Runtime(format!("cannot start the process that runs trials: {e}")))?,
        ),
        RunnerSpec::Plugin(_) => Arc::new(plugin_runner(spec, polls, metrics).map_err(RunError::Usage)?),
        RunnerSpec::External(_) => Arc::new(external_runner(spec, polls, metrics).map_err(RunError::Usage)?),
    })
}

/// A worker joins the experiment as the store holds it: the same file in the parts that
/// may not change on resume (none yet: it is the first).
fn same_experiment(l: &Launch, store: &dyn Ledger) -> Result<(), RunError> {
    let path = &l.spec.store;
    let Some(stored) = store.experiment().map_err(store_err(path))? else { return Ok(()) };
    let changes = crate::config::fixed_part_changes(&stored.spec_toml, &l.spec_text);
    if changes.is_empty() {
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "{} differs from the experiment that {} holds, in parts that workers share:\n  {}\nJoin with the same file (orchestration keys may differ).",
        l.spec_path.display(),
        path,
        changes.join("\n  ")
    )))
}

/// The budget of the experiment as the store holds it (its file and the overrides kept
/// with it): every worker holds the same one, whatever its own file says.
fn stored_budget(store: &dyn Ledger, path: &StoreLocation) -> Result<Option<(u64, Option<f64>)>, RunError> {
    let Some(e) = store.experiment().map_err(store_err(path))? else { return Ok(None) };
    let Ok(stored) = crate::config::parse(&e.spec_toml, &e.spec_path.display().to_string(), &e.base_dir) else {
        return Ok(None);
    };
    let max_trials = e.overrides.get("max_trials").and_then(|v| v.as_u64()).unwrap_or(stored.orchestration.max_trials);
    Ok(Some((max_trials, stored.orchestration.max_cost)))
}

/// Run (or resume) an experiment to its end. Returns how it ended and the store path.
pub fn launch(l: Launch, sink: &mut dyn EventSink) -> Result<RunEnd, RunError> {
    let spec = &l.spec;
    let path = spec.store.clone();
    let pid = std::process::id();
    let host = exec::hostname();
    let me = NewWorker {
        command: &l.command_line,
        pid,
        process_start: exec::process_start_time(pid),
        host: &host,
        lease_seconds: spec.orchestration.worker_lease_seconds,
    };
    // Everything that can be refused is checked before the store is touched.
    let runner = runner_for(spec, &l.exe)?;
    let opened = if l.resume { store::open_existing(&path) } else { store::open(&path, spec.durability) };
    let mut store = opened.map_err(store_err(&path))?;
    // A joiner's file is checked before it takes part (joining marks dead workers).
    if l.join {
        same_experiment(&l, store.as_ref())?;
    }
    let mut session = store.join(&me, !l.join, &worker_alive).map_err(store_err(&path))?;
    let existing = store.experiment().map_err(store_err(&path))?;
    let has_trials = store.trial_counts().map_err(store_err(&path))?.0 > 0;
    let mut store = match (l.resume, l.join, has_trials, existing.is_some()) {
        (false, false, true, _) if l.fresh => {
            stop_old_trials(store.as_mut(), spec, sink).map_err(store_err(&path))?;
            store.leave(session, None).map_err(store_err(&path))?;
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
            // A server store renames its schema; a file store's files are moved here.
            if let Some(name) = store.set_aside(&format!("bak-{stamp}")).map_err(store_err(&path))? {
                sink.event(&RunEvent::Notice(format!("--fresh: set aside the old store as the schema \"{name}\"")));
            }
            drop(store);
            for m in set_aside_as(&store_files(spec), "bak")? {
                sink.event(&RunEvent::Notice(format!("--fresh: set aside {}", m.display())));
            }
            let mut s = store::open(&path, spec.durability).map_err(store_err(&path))?;
            session = s.join(&me, true, &worker_alive).map_err(store_err(&path))?;
            s.upgrade().map_err(store_err(&path))?;
            s
        }
        (false, false, true, _) => {
            let _ = store.leave(session, Some(2));
            return Err(RunError::Usage(format!(
                "{} already holds the experiment `{}`: continue it with `optx resume {}`, or start over with `optx run --fresh` (the old store is kept as a backup)",
                path,
                existing.map(|e| e.name).unwrap_or_default(),
                l.spec_path.display()
            )));
        }
        (true, _, _, false) => {
            let _ = store.leave(session, Some(2));
            return Err(RunError::Usage(format!(
                "{} holds no experiment yet: start it with `optx run FILE.toml`",
                path
            )));
        }
        // A store with no trial yet (a first run that stopped before any) starts anew.
        _ => store,
    };
    let result = claim_trials_root(spec, store.as_ref(), sink)
        .and_then(|_| run_owned(&l, store.as_mut(), runner, session, sink));
    let code = match &result {
        Ok(RunEnd::Done | RunEnd::Detached(_) | RunEnd::Deadline(_)) => Some(0),
        Ok(RunEnd::Interrupted) => Some(130),
        Ok(_) => Some(1),
        Err(RunError::Usage(_) | RunError::Owned { .. }) => Some(2),
        Err(RunError::Runtime(_)) => Some(1),
    };
    if let Some(code) = code {
        // A worker whose lease was taken over records nothing (`leave` does not touch it).
        let _ = store.leave(session, Some(code));
    }
    result
}

fn run_owned(
    l: &Launch,
    store: &mut dyn Ledger,
    runner: Arc<dyn TrialRunner>,
    session: i64,
    sink: &mut dyn EventSink,
) -> Result<RunEnd, RunError> {
    let spec = &l.spec;
    let path = spec.store.clone();
    let stored_seed = store.experiment().map_err(store_err(&path))?.map(|e| e.seed);
    let seed = match (l.resume || l.join, stored_seed) {
        (true, Some(s)) => s,
        _ => spec.seed.unwrap_or_else(random_seed),
    };
    // A worker that joins keeps the experiment as the first one recorded it (and its seed:
    // every worker draws from one sequence).
    store
        .save_experiment(&spec.name, &l.spec_text, &l.spec_path, &spec.base_dir, seed, &l.overrides, !l.join)
        .map_err(store_err(&path))?;
    let seed = if l.join { store.experiment().map_err(store_err(&path))?.map_or(seed, |e| e.seed) } else { seed };
    // Two first joiners at once: the one whose record lost must be the same experiment.
    let mut joined = spec.clone();
    if l.join {
        same_experiment(l, store)?;
        if let Some((max_trials, max_cost)) = stored_budget(store, &path)? {
            if (max_trials, max_cost) != (spec.orchestration.max_trials, spec.orchestration.max_cost) {
                sink.event(&RunEvent::Notice(format!(
                    "the experiment's budget is the one its store holds: max_trials = {max_trials}{}",
                    max_cost.map(|c| format!(", max_cost = {c}")).unwrap_or_default()
                )));
            }
            joined.orchestration.max_trials = max_trials;
            joined.orchestration.max_cost = max_cost;
        }
    }
    let spec = &joined;
    let existing = store.trial_counts().map_err(store_err(&path))?.1;
    sink.event(&RunEvent::Started {
        name: spec.name.clone(),
        store: path.clone(),
        max_trials: spec.orchestration.max_trials,
        parallelism: spec.orchestration.parallelism,
        method: Generator::describe(spec),
        existing,
    });

    // Signals reach the dispatcher as messages; it counts them. The flag is set at once,
    // so that a proposal being computed when the first one comes is not deployed.
    let interrupted = Arc::new(AtomicBool::new(false));
    let (sig_tx, sig_rx) = unbounded();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| RunError::Runtime(format!("cannot watch signals: {e}")))?;
    let handle = signals.handle();
    let flag = Arc::clone(&interrupted);
    let sig_thread = std::thread::spawn(move || {
        for s in signals.forever() {
            flag.store(true, Ordering::SeqCst);
            if sig_tx.send(s).is_err() {
                break;
            }
        }
    });
    let interrupts = Interrupts { signals: sig_rx, flag: interrupted };
    let outcome = drive(spec, store, runner, seed, session, sink, &interrupts);
    handle.close();
    let _ = sig_thread.join();
    outcome.map_err(store_err(&path))
}
