//! L1: the experiment's ledger, behind a narrow trait ([`Ledger`]): the data of an
//! experiment (not its behaviour), and transactions as its verb. Every write goes through
//! one transaction that commits before the caller acts ([`LedgerExt::tx`]), so several
//! transitions share a commit. Uses only `domain`.
//!
//! The embedded implementation is [`SqliteStore`] (one file per experiment); a server
//! database implements the same trait for workers on many hosts. Nothing above this
//! module writes SQL or knows which one it talks to.

mod postgres;
mod sqlite;
#[cfg(test)]
mod suite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::domain::{Goal, Observation, StoreLocation, TransitionError, Trial, TrialStatus};

pub use postgres::{PgStore, PG_SCHEMA_VERSION};
pub use sqlite::{SqliteStore, SqliteTx, SCHEMA_VERSION};

/// Open the store at `target` for `run`, creating it if there is none.
pub fn open(target: &StoreLocation, durability: crate::domain::Durability) -> Result<Box<dyn Ledger>> {
    Ok(match target {
        StoreLocation::File(p) => Box::new(SqliteStore::open(p, durability)?),
        StoreLocation::Server { url, experiment } => {
            Box::new(PgStore::open(url, experiment.as_deref(), postgres::Mode::Create)?)
        }
    })
}

/// Open the store at `target`, which must exist, to resume it.
pub fn open_existing(target: &StoreLocation) -> Result<Box<dyn Ledger>> {
    Ok(match target {
        StoreLocation::File(p) => Box::new(SqliteStore::open_existing(p)?),
        StoreLocation::Server { url, experiment } => {
            Box::new(PgStore::open(url, experiment.as_deref(), postgres::Mode::Existing)?)
        }
    })
}

/// Open the store at `target` to read it, writing nothing.
pub fn open_read(target: &StoreLocation) -> Result<Box<dyn Ledger>> {
    Ok(match target {
        StoreLocation::File(p) => Box::new(SqliteStore::open_read(p)?),
        StoreLocation::Server { url, experiment } => {
            Box::new(PgStore::open(url, experiment.as_deref(), postgres::Mode::Read)?)
        }
    })
}

/// A consistent copy of the store `from` at `dest`, of either kind: a file (which must not
/// exist) or a server database (which must not hold the experiment). The copy keeps the
/// store's identity, so that its trial dirs stay its own.
pub fn copy(from: &dyn Ledger, dest: &StoreLocation) -> Result<()> {
    match dest {
        StoreLocation::File(p) => from.backup(p),
        StoreLocation::Server { url, experiment } => {
            let dump = from.dump()?;
            let name = match experiment {
                Some(e) => e.clone(),
                None => from
                    .experiment()?
                    .map(|e| e.name)
                    .ok_or_else(|| StoreError::Unusable(format!("{} holds no experiment to copy", from.location())))?,
            };
            PgStore::restore(url, &name, &dump)
        }
    }
}

/// A value of a stored row, as both kinds of store can hold it (a boolean is 0 or 1).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// How a column is typed in a server database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Int,
    Real,
    Text,
    Bool,
}

/// Every row of a store, table by table (`optx backup` between the kinds of store).
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub uuid: String,
    pub created_at: String,
    pub tables: Vec<(String, Vec<Vec<Cell>>)>,
}

use Kind::{Bool as B, Int as I, Real as R, Text as T};

/// The tables both kinds of store share, the order their rows are copied in (`rowid`: the
/// order they were written), and their columns.
/// A table: its name, the order of its rows, its columns.
pub(crate) type Table = (&'static str, &'static str, &'static [(&'static str, Kind)]);

pub(crate) const TABLES: &[Table] = &[
    (
        "experiment",
        "id",
        &[
            ("id", I),
            ("name", T),
            ("spec_toml", T),
            ("spec_hash", T),
            ("spec_path", T),
            ("base_dir", T),
            ("seed", I),
            ("overrides", T),
            ("created_at", T),
            ("updated_at", T),
        ],
    ),
    (
        "sessions",
        "id",
        &[
            ("id", I),
            ("command", T),
            ("pid", I),
            ("process_start", I),
            ("host", T),
            ("started_at", T),
            ("ended_at", T),
            ("exit_code", I),
            ("renewed_at", T),
            ("lease_seconds", R),
            ("taken_over", T),
        ],
    ),
    (
        "trials",
        "idx",
        &[
            ("idx", I),
            ("status", T),
            ("status_code", I),
            ("lost", B),
            ("arm_key", T),
            ("parameters", T),
            ("generation", T),
            ("rerun_of", I),
            ("attempt", I),
            ("slot", I),
            ("session", I),
            ("feasible", B),
            ("reason", T),
            ("run_metadata", T),
            ("stop_metadata", T),
            ("trial_dir", T),
            ("created_at", T),
            ("staged_at", T),
            ("started_at", T),
            ("completed_at", T),
            ("holder", I),
        ],
    ),
    (
        "observations",
        "rowid",
        &[("trial", I), ("metric", T), ("progression", R), ("mean", R), ("sem", R), ("final", B), ("time", T)],
    ),
    ("generator_state", "key", &[("key", T), ("value", T)]),
    ("events", "id", &[("id", I), ("time", T), ("session", I), ("trial", I), ("kind", T), ("message", T)]),
];

/// The best of feasible completed trials, from their final values as (trial, metric,
/// value) rows in trial order.
pub(crate) fn best_of(goal: &Goal, rows: impl Iterator<Item = (u64, String, f64)>) -> Vec<(u64, Vec<f64>)> {
    let mut by_trial: Vec<(u64, std::collections::BTreeMap<String, f64>)> = Vec::new();
    for (i, m, v) in rows {
        match by_trial.last_mut() {
            Some((j, values)) if *j == i => {
                values.insert(m, v);
            }
            _ => by_trial.push((i, std::collections::BTreeMap::from([(m, v)]))),
        }
    }
    goal.best(by_trial.iter().filter_map(|(i, m)| Some((*i, goal.values(|k| m.get(k).copied())?))))
}

/// The column that keeps when a trial reached `to`.
pub(crate) fn status_time_column(to: TrialStatus) -> &'static str {
    match to {
        TrialStatus::Staged => "staged_at",
        TrialStatus::Running => "started_at",
        _ => "completed_at",
    }
}

/// The event message of a transition.
pub(crate) fn transition_message(from: TrialStatus, to: TrialStatus, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{from} -> {to}: {r}"),
        None => format!("{from} -> {to}"),
    }
}

/// A random identity for a new store, as 32 hex digits.
pub(crate) fn new_uuid() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: the time and the pid, mixed.
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let x = t ^ ((std::process::id() as u128) << 64);
        bytes = x.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    Postgres(::postgres::Error),
    Json(serde_json::Error),
    Transition {
        trial: u64,
        error: TransitionError,
    },
    /// The store is held by another live optx (a worker whose lease runs).
    Owned(Box<Worker>),
    /// This worker's lease ran out and another optx took its trials over: it must stop.
    LeaseLost,
    /// The file cannot be used as a store (not one, damaged, empty, a directory): the
    /// message says what to do. Bad input, not a failure of optx.
    Unusable(String),
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "SQLite: {e}"),
            StoreError::Postgres(e) => match e.as_db_error() {
                Some(d) => write!(f, "PostgreSQL: {}", d.message()),
                None => write!(f, "PostgreSQL: {e}"),
            },
            StoreError::Json(e) => write!(f, "stored JSON: {e}"),
            StoreError::Transition { trial, error } => write!(f, "trial {trial}: {error}"),
            StoreError::Owned(w) => {
                write!(f, "the store is in use by optx (pid {} on {}, since {})", w.pid, w.host, w.started_at)
            }
            StoreError::LeaseLost => f.write_str(
                "this optx's lease on the store ran out (it did not renew it for worker_lease_seconds) and another optx took its trials over",
            ),
            StoreError::Unusable(s) | StoreError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Json(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An optx process that acts on the store (a run, resume or join): a worker. It holds a
/// lease that it renews while it lives; one whose lease ran out is dead, and another
/// worker takes its trials over.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub id: i64,
    pub command: String,
    pub pid: u32,
    pub process_start: Option<u64>,
    pub host: String,
    pub started_at: String,
    /// When it last renewed its lease (none for a worker of an optx before leases).
    pub renewed_at: Option<String>,
    pub lease_seconds: Option<f64>,
    pub ended_at: Option<String>,
    pub exit_code: Option<i32>,
    /// When another worker found it dead and took its trials over.
    pub taken_over: Option<String>,
}

impl Worker {
    /// It has neither ended nor been taken over (it may still be dead: see its lease).
    pub fn open(&self) -> bool {
        self.ended_at.is_none() && self.taken_over.is_none()
    }

    /// Whether its lease still runs at `now`.
    pub fn lease_runs(&self, now: SystemTime) -> bool {
        let (Some(at), Some(secs)) = (self.renewed_at.as_deref().and_then(parse_time), self.lease_seconds) else {
            return false;
        };
        match std::time::Duration::try_from_secs_f64(secs.max(0.0)).ok().and_then(|d| at.checked_add(d)) {
            Some(until) => now < until,
            // A lease too long to say when it ends does not end.
            None => true,
        }
    }
}

/// A worker about to join a store.
#[derive(Debug, Clone)]
pub struct NewWorker<'a> {
    pub command: &'a str,
    pub pid: u32,
    pub process_start: Option<u64>,
    pub host: &'a str,
    pub lease_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct ExperimentRow {
    pub name: String,
    pub spec_toml: String,
    pub spec_path: PathBuf,
    pub base_dir: PathBuf,
    pub seed: u64,
    /// Command-line overrides (`max_trials`, `parallelism`) that a resume keeps.
    pub overrides: serde_json::Value,
    pub created_at: String,
}

/// A new trial, as the dispatcher records it.
#[derive(Debug, Clone)]
pub struct NewTrial<'a> {
    pub index: u64,
    pub arm_key: &'a str,
    pub parameters: &'a serde_json::Value,
    pub generation: &'a str,
    pub rerun_of: Option<u64>,
    pub attempt: u32,
    pub session: i64,
}

/// What a transition also records beside the new status.
#[derive(Debug, Clone, Default)]
pub struct TransitionData<'a> {
    pub reason: Option<&'a str>,
    pub lost: bool,
    pub feasible: Option<bool>,
    pub run_metadata: Option<&'a serde_json::Value>,
    pub stop_metadata: Option<&'a serde_json::Value>,
    pub slot: Option<usize>,
    pub trial_dir: Option<&'a str>,
}

/// The current time as stored: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Parse a stored time back.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// An experiment's ledger. Object-safe, so the scheduler works with any implementation.
pub trait Ledger {
    /// Where the store is, for messages (a path, or a URL without its password).
    fn location(&self) -> String;
    /// The store's identity, which its trials' records carry.
    fn id(&self) -> Result<String>;
    /// Bring the schema up to this optx's version (by the owner, once it holds the store).
    fn upgrade(&mut self) -> Result<()>;
    /// Join the store as a worker, in one transaction: the workers that `alive` says are
    /// dead are marked taken over (a dead one that wakes up finds it and stops); with
    /// `exclusive`, a live one refuses the join (`Owned`). Upgrades the schema first, once
    /// no older optx holds the store. Returns the new worker's id (its session). From then
    /// on, every transaction of this store checks that the worker still holds its lease.
    fn join(&mut self, me: &NewWorker, exclusive: bool, alive: &dyn Fn(&Worker) -> bool) -> Result<i64>;
    /// Renew this worker's lease; `LeaseLost` if it was taken over.
    fn renew(&mut self, worker: i64) -> Result<()>;
    /// The worker ends (with the exit code it ends with).
    fn leave(&mut self, worker: i64, exit_code: Option<i32>) -> Result<()>;
    /// Every worker that ever joined, oldest first.
    fn workers(&self) -> Result<Vec<Worker>>;
    fn experiment(&self) -> Result<Option<ExperimentRow>>;
    /// Record the experiment (first run) or, with `replace`, its new file (resume); without
    /// `replace` an experiment already recorded stays as it is.
    #[allow(clippy::too_many_arguments)]
    fn save_experiment(
        &mut self,
        name: &str,
        spec_toml: &str,
        spec_path: &Path,
        base_dir: &Path,
        seed: u64,
        overrides: &serde_json::Value,
        replace: bool,
    ) -> Result<()>;
    fn trials(&self) -> Result<Vec<Trial>>;
    /// The id of the newest event: where a cache of the ledger starts reading changes.
    fn last_event(&self) -> Result<i64>;
    /// The number of trials, and of those that are not lost.
    fn trial_counts(&self) -> Result<(u64, u64)>;
    /// The number of points of learning curves stored for each of `trials`.
    fn curve_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, usize>>;
    /// The newest point of a learning curve stored for each of `trials` (that has one).
    fn latest_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, Observation>>;
    /// Every observation, in trial and arrival order.
    fn observations(&self) -> Result<Vec<Observation>>;
    /// The final observations only.
    fn final_observations(&self) -> Result<Vec<Observation>>;
    /// Every observation in the order it was stored, with the time of its transaction
    /// (`replay` runs the stopping rules over this log).
    fn observation_log(&self) -> Result<Vec<(Observation, String)>>;
    /// Trials by (status, lost).
    fn status_counts(&self) -> Result<Vec<(String, bool, u64)>>;
    /// The number of feasible completed trials.
    fn feasible_count(&self) -> Result<u64>;
    /// The best feasible completed trials (the best one, or the Pareto front) with their
    /// objective values and parameters.
    fn best(&self, goal: &Goal) -> Result<Vec<(u64, Vec<f64>, serde_json::Value)>>;
    fn generator_state(&self, key: &str) -> Result<Option<serde_json::Value>>;
    /// A consistent copy of the store in a new SQLite file at `dest`, which must not exist.
    fn backup(&self, dest: &Path) -> Result<()>;
    /// Every row, from one consistent snapshot.
    fn dump(&self) -> Result<Dump>;
    /// `run --fresh` on a server store: keep it under a new name (returned), so that the
    /// experiment starts anew. A file store returns none: its files are moved by the caller.
    fn set_aside(&mut self, tag: &str) -> Result<Option<String>>;
    /// Run `f` once, in one transaction that commits before this returns (nothing of it
    /// stays if `f` fails). Callers use [`LedgerExt::tx`].
    fn transaction(&mut self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
}

/// The writes of one transaction.
pub trait Tx {
    /// The time all writes of this transaction carry.
    fn time(&self) -> &str;
    fn insert_trial(&mut self, n: &NewTrial) -> Result<()>;
    /// Move a trial from `from` to `to` (checked by the lifecycle and against the stored
    /// status), recording the time of the new status and `data`.
    fn transition(&mut self, index: u64, from: TrialStatus, to: TrialStatus, data: &TransitionData) -> Result<()>;
    /// Update the run metadata of a trial without a transition.
    fn set_run_metadata(&mut self, index: u64, meta: &serde_json::Value) -> Result<()>;
    /// The worker that follows a trial from now on (none: a trial asked for, or attached,
    /// that the user runs). Other workers learn it through the feed.
    fn hold(&mut self, index: u64, worker: Option<i64>) -> Result<()>;
    /// Take a trial for `me` if its holder is still `seen` (compare and set): of workers
    /// that would settle it, exactly one does. Other workers learn it through the feed.
    fn claim(&mut self, index: u64, seen: Option<i64>, me: i64) -> Result<bool>;
    /// The trials that have not ended, as stored now.
    fn open_trials(&mut self) -> Result<Vec<Trial>>;
    /// The index the next new trial gets.
    fn next_index(&mut self) -> Result<u64>;
    /// The workers that have neither ended nor been taken over (alive, or dead and not
    /// noticed yet): the trials they hold are theirs.
    fn open_workers(&mut self) -> Result<Vec<i64>>;
    /// Mark the worker `dead` as taken over if `alive`, asked again inside this transaction,
    /// says it is dead; false if it lives, ended, or another worker marked it first.
    fn take_over(&mut self, dead: i64, alive: &dyn Fn(&Worker) -> bool) -> Result<bool>;
    fn observation(&mut self, o: &Observation) -> Result<()>;
    fn set_generator_state(&mut self, key: &str, value: &serde_json::Value) -> Result<()>;
    fn event(&mut self, trial: Option<u64>, kind: &str, message: Option<&str>) -> Result<()>;
    /// The change feed: the trials that workers other than `me` changed after event
    /// `after` (as stored now, in index order, with the final observations of those that
    /// ended), and the id of the newest event (the cursor for the next look).
    fn changes(&mut self, after: i64, me: i64) -> Result<Changes>;
    /// One trial as stored now.
    fn trial(&mut self, index: u64) -> Result<Option<Trial>>;
    fn generator_state(&mut self, key: &str) -> Result<Option<serde_json::Value>>;
}

/// What the change feed brings.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub cursor: i64,
    pub trials: Vec<Trial>,
    pub finals: Vec<Observation>,
}

/// [`Ledger::transaction`] with a result.
pub trait LedgerExt: Ledger {
    fn tx<T>(&mut self, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        self.transaction(&mut |tx| {
            let f = f.take().ok_or_else(|| StoreError::Other("a transaction ran its work twice".into()))?;
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Other("a transaction committed without its work".into()))
    }
}

impl<L: Ledger + ?Sized> LedgerExt for L {}

/// FNV-1a: a stable hash of the spec text, for a quick look at whether it changed.
pub(crate) fn fnv1a(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}
