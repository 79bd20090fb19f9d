//! The embedded store: one SQLite file per experiment, WAL, `PRAGMA user_version` for the
//! schema with forward migrations; a store written by a newer optx is refused. The schema
//! is documented in the README.
//!
//! A new store is built under a temporary name and linked into place whole, so nobody
//! ever sees a store half-created: two `optx run` started at once agree on one store (the
//! second is then refused by its owner), and a reader never waits for a creator. Readers
//! (`status`, `trials`, `best`) open the file read-only and never write to it. Each store
//! has an identity of its own (`store.uuid`), which its trial dirs carry.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    fnv1a, new_uuid, now, Cell, Changes, Dump, ExperimentRow, Ledger, NewTrial, NewWorker, Result, StoreError,
    TransitionData, Tx, Worker,
};
use crate::domain::{Durability, Goal, Observation, Trial, TrialStatus};

/// The schema this optx writes.
pub const SCHEMA_VERSION: i64 = 3;

/// Version 2: the store's identity.
const MIGRATE_2: &str = r#"
CREATE TABLE store (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    uuid        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#;

/// Version 3: workers (sessions) hold leases; a trial says which worker follows it.
const MIGRATE_3: &str = r#"
ALTER TABLE sessions ADD COLUMN process_start INTEGER;
ALTER TABLE sessions ADD COLUMN renewed_at TEXT;
ALTER TABLE sessions ADD COLUMN lease_seconds REAL;
ALTER TABLE sessions ADD COLUMN taken_over TEXT;
ALTER TABLE trials ADD COLUMN holder INTEGER;
"#;

/// Indexes for reads that must stay fast on big stores (`optx status` reads the final
/// values of 10,000 trials among 1,000,000 observations).
const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS observations_finals ON observations(trial, metric, progression, mean, sem, final) WHERE final = 1;
"#;

const SCHEMA: &str = r#"
CREATE TABLE experiment (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    name        TEXT NOT NULL,
    spec_toml   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    spec_path   TEXT NOT NULL,
    base_dir    TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    overrides   TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE trials (
    idx           INTEGER PRIMARY KEY,
    status        TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    lost          INTEGER NOT NULL DEFAULT 0,
    arm_key       TEXT NOT NULL,
    parameters    TEXT NOT NULL,
    generation    TEXT NOT NULL,
    rerun_of      INTEGER,
    attempt       INTEGER NOT NULL DEFAULT 1,
    slot          INTEGER,
    session       INTEGER NOT NULL,
    feasible      INTEGER,
    reason        TEXT,
    run_metadata  TEXT,
    stop_metadata TEXT,
    trial_dir     TEXT,
    created_at    TEXT NOT NULL,
    staged_at     TEXT,
    started_at    TEXT,
    completed_at  TEXT
);
CREATE INDEX trials_arm ON trials(arm_key);
CREATE TABLE observations (
    trial       INTEGER NOT NULL,
    metric      TEXT NOT NULL,
    progression REAL,
    mean        REAL NOT NULL,
    sem         REAL,
    final       INTEGER NOT NULL DEFAULT 0,
    time        TEXT NOT NULL
);
CREATE INDEX observations_trial ON observations(trial, metric);
CREATE TABLE generator_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    time    TEXT NOT NULL,
    session INTEGER,
    trial   INTEGER,
    kind    TEXT NOT NULL,
    message TEXT
);
CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY,
    command    TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    exit_code  INTEGER
);
CREATE TABLE owner (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    pid           INTEGER NOT NULL,
    process_start INTEGER,
    host          TEXT NOT NULL,
    since         TEXT NOT NULL
);
"#;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// This connection owns the store (run/resume): it folds the WAL in when closed.
    owner: bool,
    /// The worker whose lease every transaction checks first.
    fence: Option<i64>,
    /// When this worker last renewed its lease, and how often it should: transactions
    /// renew it when a sixth of the lease has passed, not at every commit.
    renewed: Option<(std::time::Instant, std::time::Duration)>,
}

/// A connection that closes last neither checkpoints nor deletes the WAL: doing so takes
/// the database file's exclusive lock, and a process stopped (or slow) in that moment would
/// keep every reader waiting. The owner checkpoints at its end instead (`Drop`), so that
/// the `.db` file holds everything and its `-wal` is empty at rest.
fn keep_wal_on_close(c: &Connection) -> rusqlite::Result<()> {
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map(|_| ())
}

/// Migrate an optx store of schema `from` (0: its tables were just created) to this
/// version, inside the caller's transaction.
fn migrate(tx: &rusqlite::Transaction, from: i64) -> Result<()> {
    if from < 2 {
        tx.execute_batch(MIGRATE_2)?;
        tx.execute("INSERT INTO store (id, uuid, created_at) VALUES (1, ?1, ?2)", params![new_uuid(), now()])?;
    }
    if from < 3 {
        tx.execute_batch(MIGRATE_3)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

const TRIAL_COLUMNS: &str =
    "idx, status, lost, arm_key, parameters, generation, rerun_of, attempt, slot, session, feasible,
     reason, run_metadata, stop_metadata, trial_dir, created_at, staged_at, started_at, completed_at, holder";

fn trial_row(r: &rusqlite::Row) -> rusqlite::Result<Trial> {
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(r.get::<_, Option<String>>(i)?.and_then(|s| serde_json::from_str(&s).ok()))
    };
    Ok(Trial {
        index: r.get::<_, i64>(0)? as u64,
        status: r.get::<_, String>(1)?.parse().unwrap_or(TrialStatus::Failed),
        lost: r.get::<_, i64>(2)? != 0,
        arm_key: r.get(3)?,
        parameters: json(4)?.unwrap_or(serde_json::Value::Null),
        generation: r.get(5)?,
        rerun_of: r.get::<_, Option<i64>>(6)?.map(|x| x as u64),
        attempt: r.get::<_, i64>(7)? as u32,
        slot: r.get::<_, Option<i64>>(8)?.map(|x| x as usize),
        session: r.get(9)?,
        feasible: r.get::<_, Option<i64>>(10)?.map(|x| x != 0),
        reason: r.get(11)?,
        run_metadata: json(12)?,
        stop_metadata: json(13)?,
        trial_dir: r.get(14)?,
        created_at: r.get(15)?,
        staged_at: r.get(16)?,
        started_at: r.get(17)?,
        completed_at: r.get(18)?,
        holder: r.get(19)?,
    })
}

fn observation_row(r: &rusqlite::Row) -> rusqlite::Result<Observation> {
    Ok(Observation {
        trial: r.get::<_, i64>(0)? as u64,
        metric: r.get(1)?,
        progression: r.get(2)?,
        mean: r.get(3)?,
        sem: r.get(4)?,
        is_final: r.get::<_, i64>(5)? != 0,
    })
}

const WORKER_COLUMNS: &str =
    "id, command, pid, process_start, host, started_at, renewed_at, lease_seconds, ended_at, exit_code, taken_over";

fn worker_row(r: &rusqlite::Row) -> rusqlite::Result<Worker> {
    Ok(Worker {
        id: r.get(0)?,
        command: r.get(1)?,
        pid: r.get::<_, i64>(2)? as u32,
        process_start: r.get::<_, Option<i64>>(3)?.map(|x| x as u64),
        host: r.get(4)?,
        started_at: r.get(5)?,
        renewed_at: r.get(6)?,
        lease_seconds: r.get(7)?,
        ended_at: r.get(8)?,
        exit_code: r.get(9)?,
        taken_over: r.get(10)?,
    })
}

/// What opening a store found wrong with the file, as advice.
fn unusable(path: &Path, e: &rusqlite::Error) -> Option<StoreError> {
    use rusqlite::ErrorCode;
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) => f.code,
        _ => return None,
    };
    let p = path.display();
    Some(StoreError::Unusable(match code {
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => format!(
            "{p} is not an optx store, or it is damaged (SQLite: {e}): restore it from a copy (`optx backup` makes one), or move it aside and start again with `optx run --fresh`"
        ),
        ErrorCode::CannotOpen => format!("cannot open {p} (SQLite: {e}): check that it exists and can be read"),
        ErrorCode::ReadOnly => format!("{p} is read-only (SQLite: {e}): `optx run` and `resume` need to write it"),
        ErrorCode::PermissionDenied => format!("no permission to open {p} (SQLite: {e})"),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => format!(
            "{p} stayed locked by another process (SQLite: {e}): is an optx frozen (stopped) while it writes?"
        ),
        _ => return None,
    }))
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| unusable(path, &e).unwrap_or(StoreError::Sqlite(e))
}

/// How long a reader waits for a lock held by another connection.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a writer (a worker) waits for the write lock: other workers hold it while a
/// Bayesian proposal is computed, which can take seconds on a large experiment.
const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Refuse a path that cannot hold a store before SQLite makes something of it.
fn check_path(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(StoreError::Unusable(format!(
            "{} is a directory, not a store: give the path of a file (such as `experiment.db`)",
            path.display()
        ))),
        Ok(m) if !m.is_file() => {
            Err(StoreError::Unusable(format!("{} is not a regular file: a store is a file", path.display())))
        }
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Unusable(format!("cannot read {}: {e}", path.display()))),
    }
}

impl SqliteStore {
    /// Open a store for `run`/`resume`, creating it (whole, atomically) if there is none.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unusable(format!("cannot create the directory {}: {e}", dir.display())))?;
            }
        }
        if check_path(path)?.is_none() {
            Self::create(path)?;
        }
        let conn =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sqlite_err(path))?;
        Self::setup(conn, path, durability)
    }

    /// Build a new store under a temporary name and link it into place if the path is
    /// still free; if another optx was quicker, its store is used.
    fn create(path: &Path) -> Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.new-{}-{}", std::process::id(), &new_uuid()[..8]));
        let built = build_at(&tmp, |_| Ok(()));
        let linked = built.and_then(|_| {
            place_new(&tmp, path)
                .map_err(|e| StoreError::Unusable(format!("cannot create the store {}: {e}", path.display())))
        });
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        linked
    }

    /// A new store at `dest` (which must not exist) holding the rows of `dump`: `optx
    /// backup` from a server database. Built under a temporary name and linked whole.
    pub fn restore(dest: &Path, dump: &Dump) -> Result<()> {
        if check_path(dest)?.is_some() {
            return Err(StoreError::Unusable(format!("{} exists already: give a new file", dest.display())));
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.part-{}-{}", std::process::id(), &new_uuid()[..8]));
        let built = build_at(&tmp, |tx| {
            tx.execute(
                "UPDATE store SET uuid = ?1, created_at = ?2 WHERE id = 1",
                params![dump.uuid, dump.created_at],
            )?;
            for (table, rows) in &dump.tables {
                let Some((_, _, cols)) = super::TABLES.iter().find(|(n, _, _)| n == table) else { continue };
                let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
                let marks = vec!["?"; names.len()].join(", ");
                let mut st = tx.prepare(&format!("INSERT INTO {table} ({}) VALUES ({marks})", names.join(", ")))?;
                for row in rows {
                    let values = row.iter().map(|c| match c {
                        Cell::Null => rusqlite::types::Value::Null,
                        Cell::Int(x) => rusqlite::types::Value::Integer(*x),
                        Cell::Real(x) => rusqlite::types::Value::Real(*x),
                        Cell::Text(x) => rusqlite::types::Value::Text(x.clone()),
                    });
                    st.execute(rusqlite::params_from_iter(values))?;
                }
            }
            Ok(())
        })
        .and_then(|_| {
            std::fs::hard_link(&tmp, dest)
                .map_err(|e| StoreError::Unusable(format!("cannot write {}: {e}", dest.display())))
        });
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        built
    }

    /// Open a store that must exist already, to resume it.
    pub fn open_existing(path: &Path) -> Result<SqliteStore> {
        match check_path(path)? {
            None => return Err(StoreError::Unusable(format!("there is no store at {}", path.display()))),
            Some(m) if m.len() == 0 => return Err(Self::empty(path)),
            Some(_) => {}
        }
        let conn =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sqlite_err(path))?;
        Self::setup(conn, path, Durability::Normal)
    }

    fn empty(path: &Path) -> StoreError {
        StoreError::Unusable(format!(
            "{} is empty: it holds no experiment (it was never written, or it was truncated; restore a copy if you have one)",
            path.display()
        ))
    }

    /// Open a store to read it (`status`, `trials`, `best`): read-only, so that a store
    /// without write permission can be read, and a writer is never waited for.
    pub fn open_read(path: &Path) -> Result<SqliteStore> {
        match check_path(path)? {
            None => return Err(StoreError::Unusable(format!("there is no store at {}", path.display()))),
            Some(m) if m.len() == 0 => return Err(Self::empty(path)),
            Some(_) => {}
        }
        use rusqlite::OpenFlags as F;
        // Read-write where allowed (it still writes nothing) so that, closing last, it folds
        // the WAL in and leaves one file; read-only where not.
        let mode = if writable(path) { F::SQLITE_OPEN_READ_WRITE } else { F::SQLITE_OPEN_READ_ONLY };
        let open = |uri: &str| -> rusqlite::Result<Connection> {
            let c = Connection::open_with_flags(uri, mode | F::SQLITE_OPEN_URI)?;
            keep_wal_on_close(&c)?;
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
            Ok(c)
        };
        let uri = sqlite_uri(path, mode.contains(F::SQLITE_OPEN_READ_ONLY));
        let conn = match open(&uri) {
            Ok(c) => c,
            // A WAL store at rest (no `-wal` and `-shm`: a writer would have made them) in a
            // directory this user cannot write, so they cannot be made: read as immutable.
            Err(_) if !writable(path) => open(&format!("{uri}&immutable=1")).map_err(sqlite_err(path))?,
            Err(e) => return Err(sqlite_err(path)(e)),
        };
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite_err(path))?;
        if version > SCHEMA_VERSION {
            return Err(Self::newer(path, version));
        }
        if version == 0 {
            return Err(StoreError::Unusable(format!(
                "{} holds no experiment yet (an optx may be creating it)",
                path.display()
            )));
        }
        Ok(SqliteStore { conn, path: path.to_path_buf(), owner: false, fence: None, renewed: None })
    }

    fn newer(path: &Path, version: i64) -> StoreError {
        StoreError::Unusable(format!(
            "{} was written by a newer optx (store schema {version}; this optx reads up to {SCHEMA_VERSION}): upgrade optx",
            path.display()
        ))
    }

    fn setup(conn: Connection, path: &Path, durability: Durability) -> Result<SqliteStore> {
        let err = sqlite_err(path);
        conn.busy_timeout(WRITER_BUSY_TIMEOUT).map_err(&err)?;
        keep_wal_on_close(&conn).map_err(&err)?;
        // SQLite opens a file it may not write read-only, silently: run and resume write.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(&err)? {
            return Err(StoreError::Unusable(format!(
                "{} is read-only for this user: `optx run` and `resume` need to write it (`status`, `best` and `trials` can read it)",
                path.display()
            )));
        }
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&err)?;
        if version > SCHEMA_VERSION {
            return Err(Self::newer(path, version));
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&err)?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Fsync => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(&err)?;
        // A checkpoint (which fsyncs) every ~40 MB of WAL rather than every 4 MB: commits
        // stay durable against a crash of optx, and a run of short trials does not stall
        // on a disk flush every few dozen trials. `Drop` checkpoints what is left.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000).map_err(&err)?;
        let mut store = SqliteStore { conn, path: path.to_path_buf(), owner: false, fence: None, renewed: None };
        // An empty file becomes a new store now; an older store is upgraded only by its
        // owner (`upgrade`, once it holds the store), never under an optx that runs it.
        if version == 0 {
            store.upgrade()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_observations(&self, filter: &str) -> Result<Vec<Observation>> {
        let sql = format!(
            "SELECT trial, metric, progression, mean, sem, final FROM observations {filter} ORDER BY trial, rowid"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], observation_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl Ledger for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn upgrade(&mut self) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err(&path))?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            // Indexes only speed reads up: a store of any version gets them, and an older
            // optx reads it as before.
            tx.execute_batch(INDEXES)?;
            tx.commit()?;
            return Ok(());
        }
        if version == 0 {
            // An empty SQLite file (a truncated store, say) becomes a new store.
            let tables: i64 =
                tx.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
            if tables > 0 {
                return Err(StoreError::Unusable(format!(
                    "{} is an SQLite file but not an optx store",
                    path.display()
                )));
            }
            tx.execute_batch(SCHEMA)?;
        }
        migrate(&tx, version)?;
        tx.execute_batch(INDEXES)?;
        tx.commit()?;
        Ok(())
    }

    fn id(&self) -> Result<String> {
        Ok(self.conn.query_row("SELECT uuid FROM store WHERE id = 1", [], |r| r.get(0))?)
    }

    /// SQLite's online backup: safe while optx writes the store, and it includes what only
    /// the `-wal` file holds.
    fn backup(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(StoreError::Unusable(format!("{} exists already: give a new file", dest.display())));
        }
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.part-{}", std::process::id()));
        let copied = (|| -> Result<()> {
            let mut to = Connection::open(&tmp)?;
            {
                // One step that copies every page inside one read transaction: a consistent
                // snapshot, which a writer's commits cannot make start over.
                let b = rusqlite::backup::Backup::new(&self.conn, &mut to)?;
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => {}
                    other => return Err(StoreError::Other(format!("the copy did not complete ({other:?})"))),
                }
            }
            to.pragma_update(None, "journal_mode", "WAL")?;
            to.close().map_err(|(_, e)| e)?;
            std::fs::hard_link(&tmp, dest)
                .map_err(|e| StoreError::Unusable(format!("cannot write {}: {e}", dest.display())))
        })();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        copied
    }

    fn dump(&self) -> Result<Dump> {
        // One read transaction: a consistent snapshot while workers write.
        let t = self.conn.unchecked_transaction()?;
        let (uuid, created_at) =
            t.query_row("SELECT uuid, created_at FROM store WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut dump = Dump { uuid, created_at, tables: Vec::new() };
        for (table, order, cols) in super::TABLES {
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
            let mut st = t.prepare(&sql)?;
            let rows = st.query_map([], |r| {
                (0..cols.len())
                    .map(|i| {
                        Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                            rusqlite::types::Value::Null => Cell::Null,
                            rusqlite::types::Value::Integer(x) => Cell::Int(x),
                            rusqlite::types::Value::Real(x) => Cell::Real(x),
                            rusqlite::types::Value::Text(x) => Cell::Text(x),
                            rusqlite::types::Value::Blob(b) => Cell::Text(String::from_utf8_lossy(&b).into_owned()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })?;
            dump.tables.push((table.to_string(), rows.collect::<rusqlite::Result<_>>()?));
        }
        Ok(dump)
    }

    fn set_aside(&mut self, _tag: &str) -> Result<Option<String>> {
        Ok(None)
    }

    fn experiment(&self) -> Result<Option<ExperimentRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, spec_toml, spec_path, base_dir, seed, overrides, created_at FROM experiment WHERE id = 1",
                [],
                |r| {
                    Ok(ExperimentRow {
                        name: r.get(0)?,
                        spec_toml: r.get(1)?,
                        spec_path: PathBuf::from(r.get::<_, String>(2)?),
                        base_dir: PathBuf::from(r.get::<_, String>(3)?),
                        seed: r.get::<_, i64>(4)? as u64,
                        overrides: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                        created_at: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    fn save_experiment(
        &mut self,
        name: &str,
        spec_toml: &str,
        spec_path: &Path,
        base_dir: &Path,
        seed: u64,
        overrides: &serde_json::Value,
        replace: bool,
    ) -> Result<()> {
        let now = now();
        let on_conflict = if replace {
            "DO UPDATE SET spec_toml = ?2, spec_hash = ?3, spec_path = ?4, base_dir = ?5, seed = ?6, overrides = ?7, updated_at = ?8"
        } else {
            "DO NOTHING"
        };
        self.conn.execute(
            &format!(
                "INSERT INTO experiment (id, name, spec_toml, spec_hash, spec_path, base_dir, seed, overrides, created_at, updated_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT(id) {on_conflict}"
            ),
            params![
                name,
                spec_toml,
                fnv1a(spec_toml),
                spec_path.to_string_lossy(),
                base_dir.to_string_lossy(),
                seed as i64,
                overrides.to_string(),
                now
            ],
        )?;
        Ok(())
    }

    fn join(&mut self, me: &NewWorker, exclusive: bool, alive: &dyn Fn(&Worker) -> bool) -> Result<i64> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err(&path))?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 3 {
            // The owner of an optx from before leases, if it still runs, keeps the store
            // (and its schema, which it reads).
            let owner = tx
                .query_row("SELECT pid, process_start, host, since FROM owner WHERE id = 1", [], |r| {
                    Ok(Worker {
                        id: 0,
                        command: String::new(),
                        pid: r.get::<_, i64>(0)? as u32,
                        process_start: r.get::<_, Option<i64>>(1)?.map(|x| x as u64),
                        host: r.get(2)?,
                        started_at: r.get(3)?,
                        renewed_at: Some(now()),
                        // No lease before leases: it lives as long as its process does.
                        lease_seconds: Some(1e12),
                        ended_at: None,
                        exit_code: None,
                        taken_over: None,
                    })
                })
                .optional()?;
            if let Some(o) = owner.filter(|o| alive(o)) {
                return Err(StoreError::Owned(Box::new(o)));
            }
            migrate(&tx, version)?;
            tx.execute("DELETE FROM owner", [])?;
        }
        // Every worker that writes makes sure of the read indexes (cheap once they exist).
        tx.execute_batch(INDEXES)?;
        let open: Vec<Worker> = {
            let sql = format!(
                "SELECT {WORKER_COLUMNS} FROM sessions WHERE ended_at IS NULL AND taken_over IS NULL ORDER BY id"
            );
            let mut st = tx.prepare(&sql)?;
            let rows = st.query_map([], worker_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let time = now();
        for w in &open {
            if !alive(w) {
                tx.execute("UPDATE sessions SET taken_over = ?1 WHERE id = ?2", params![time, w.id])?;
            } else if exclusive {
                return Err(StoreError::Owned(Box::new(w.clone())));
            }
        }
        tx.execute(
            "INSERT INTO sessions (command, pid, process_start, host, started_at, renewed_at, lease_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            params![me.command, me.pid as i64, me.process_start.map(|x| x as i64), me.host, time, me.lease_seconds],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        self.owner = true;
        self.fence = Some(id);
        self.renewed = Some((std::time::Instant::now(), std::time::Duration::from_secs_f64(me.lease_seconds / 6.0)));
        Ok(id)
    }

    fn renew(&mut self, worker: i64) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE sessions SET renewed_at = ?1 WHERE id = ?2 AND taken_over IS NULL AND ended_at IS NULL",
            params![now(), worker],
        )?;
        if n == 1 {
            if let Some((at, _)) = &mut self.renewed {
                *at = std::time::Instant::now();
            }
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    fn leave(&mut self, worker: i64, exit_code: Option<i32>) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET ended_at = ?1, exit_code = ?2 WHERE id = ?3 AND taken_over IS NULL",
            params![now(), exit_code, worker],
        )?;
        self.fence = None;
        self.renewed = None;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<Worker>> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {WORKER_COLUMNS} FROM sessions ORDER BY id"))?;
        let rows = st.query_map([], worker_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        let mut st = self.conn.prepare_cached(&format!("SELECT {TRIAL_COLUMNS} FROM trials ORDER BY idx"))?;
        let rows = st.query_map([], trial_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn last_event(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
    }

    fn trial_counts(&self) -> Result<(u64, u64)> {
        let (all, nonlost): (i64, i64) =
            self.conn.query_row("SELECT count(*), coalesce(sum(lost = 0), 0) FROM trials", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((all as u64, nonlost as u64))
    }

    fn curve_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, usize>> {
        let mut st = self.conn.prepare_cached(
            "SELECT count(*) FROM observations WHERE trial = ?1 AND final = 0 AND progression IS NOT NULL",
        )?;
        let mut out = std::collections::HashMap::new();
        for t in trials {
            let n: i64 = st.query_row([*t as i64], |r| r.get(0))?;
            out.insert(*t, n as usize);
        }
        Ok(out)
    }

    fn latest_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, Observation>> {
        let mut st = self.conn.prepare_cached(
            "SELECT trial, metric, progression, mean, sem, final FROM observations
             WHERE trial = ?1 AND final = 0 AND progression IS NOT NULL ORDER BY rowid DESC LIMIT 1",
        )?;
        let mut out = std::collections::HashMap::new();
        for t in trials {
            if let Some(o) = st.query_map([*t as i64], observation_row)?.next() {
                out.insert(*t, o?);
            }
        }
        Ok(out)
    }

    fn observations(&self) -> Result<Vec<Observation>> {
        self.query_observations("")
    }

    fn final_observations(&self) -> Result<Vec<Observation>> {
        self.query_observations("WHERE final = 1")
    }

    fn observation_log(&self) -> Result<Vec<(Observation, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT trial, metric, progression, mean, sem, final, time FROM observations ORDER BY rowid",
        )?;
        let rows = st.query_map([], |r| Ok((observation_row(r)?, r.get::<_, String>(6)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn status_counts(&self) -> Result<Vec<(String, bool, u64)>> {
        let mut st = self.conn.prepare_cached("SELECT status, lost, count(*) FROM trials GROUP BY status, lost")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get::<_, i64>(2)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn feasible_count(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM trials WHERE status = 'COMPLETED' AND feasible = 1",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    fn best(&self, goal: &Goal) -> Result<Vec<(u64, Vec<f64>, serde_json::Value)>> {
        let metrics = goal.metrics();
        let marks = vec!["?"; metrics.len()].join(", ");
        let sql = format!(
            "SELECT t.idx, o.metric, o.mean FROM trials t JOIN observations o ON o.trial = t.idx
             WHERE t.status = 'COMPLETED' AND t.feasible = 1 AND o.final = 1 AND o.metric IN ({marks})
             ORDER BY t.idx, o.rowid"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(&metrics), |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?, r.get::<_, f64>(2)?))
        })?;
        let rows: Vec<(u64, String, f64)> = rows.collect::<rusqlite::Result<_>>()?;
        let best = super::best_of(goal, rows.into_iter());
        let mut out = Vec::with_capacity(best.len());
        for (i, v) in best {
            let p: String =
                self.conn.query_row("SELECT parameters FROM trials WHERE idx = ?1", [i as i64], |r| r.get(0))?;
            out.push((i, v, serde_json::from_str(&p).unwrap_or(serde_json::Value::Null)));
        }
        Ok(out)
    }

    fn generator_state(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let s: Option<String> =
            self.conn.query_row("SELECT value FROM generator_state WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        Ok(match s {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }

    fn transaction(&mut self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let asked = std::time::Instant::now();
        let t = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = std::time::Instant::now();
        if let Some(worker) = self.fence {
            // Fenced: a worker whose lease was taken over writes nothing more.
            let taken: Option<String> = t
                .query_row("SELECT taken_over FROM sessions WHERE id = ?1", [worker], |r| r.get(0))
                .optional()?
                .flatten();
            if taken.is_some() {
                return Err(StoreError::LeaseLost);
            }
            // A worker busy with work renews its lease as it writes (every sixth of it).
            if let Some((at, every)) = &mut self.renewed {
                if at.elapsed() >= *every {
                    t.execute("UPDATE sessions SET renewed_at = ?1 WHERE id = ?2", params![now(), worker])?;
                    *at = std::time::Instant::now();
                }
            }
        }
        let mut tx = SqliteTx { t, time: now(), worker: self.fence };
        f(&mut tx)?;
        tx.t.commit()?;
        // For the workers benchmark: how long the store's write lock was waited for and held.
        tracing::debug!(
            target: "optx::store::lock",
            waited_us = held.duration_since(asked).as_micros() as u64,
            held_us = held.elapsed().as_micros() as u64,
            "transaction"
        );
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The owner folds the WAL into the database file, so that the store is one file at
        // rest; a reader (`optx status` beside a run) leaves the writer alone.
        if self.owner {
            let _ = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
        }
    }
}

/// A write transaction of the SQLite store.
pub struct SqliteTx<'c> {
    t: rusqlite::Transaction<'c>,
    time: String,
    /// The worker that writes (its events say so, and the others read them as changes).
    worker: Option<i64>,
}

impl Tx for SqliteTx<'_> {
    /// The time all writes of this transaction carry.
    fn time(&self) -> &str {
        &self.time
    }

    fn insert_trial(&mut self, n: &NewTrial) -> Result<()> {
        let status = TrialStatus::Candidate;
        self.t
            .prepare_cached(
                "INSERT INTO trials (idx, status, status_code, arm_key, parameters, generation, rerun_of, attempt, session, holder, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            )?
            .execute(params![
                n.index as i64,
                status.as_str(),
                status.code(),
                n.arm_key,
                n.parameters.to_string(),
                n.generation,
                n.rerun_of.map(|x| x as i64),
                n.attempt,
                n.session,
                self.time
            ])?;
        self.event(Some(n.index), "created", Some(n.generation))
    }

    /// Move a trial from `from` to `to` (checked by the lifecycle and against the stored
    /// status), recording the time of the new status and `data`.
    fn transition(&mut self, index: u64, from: TrialStatus, to: TrialStatus, data: &TransitionData) -> Result<()> {
        from.transition(to).map_err(|error| StoreError::Transition { trial: index, error })?;
        let time_col = crate::store::status_time_column(to);
        let sql = format!(
            "UPDATE trials SET status = ?1, status_code = ?2, {time_col} = ?3,
                reason = coalesce(?4, reason), lost = ?5 OR lost, feasible = coalesce(?6, feasible),
                run_metadata = coalesce(?7, run_metadata), stop_metadata = coalesce(?8, stop_metadata),
                slot = coalesce(?9, slot), trial_dir = coalesce(?10, trial_dir)
             WHERE idx = ?11 AND status = ?12"
        );
        let changed = self.t.prepare_cached(&sql)?.execute(params![
            to.as_str(),
            to.code(),
            self.time,
            data.reason,
            data.lost,
            data.feasible,
            data.run_metadata.map(|v| v.to_string()),
            data.stop_metadata.map(|v| v.to_string()),
            data.slot.map(|s| s as i64),
            data.trial_dir,
            index as i64,
            from.as_str(),
        ])?;
        if changed != 1 {
            return Err(StoreError::Other(format!(
                "trial {index} is not {from} in the store: refusing {from} -> {to}"
            )));
        }
        let msg = crate::store::transition_message(from, to, data.reason);
        self.event(Some(index), "transition", Some(&msg))
    }

    /// Update the run metadata of a trial without a transition.
    fn set_run_metadata(&mut self, index: u64, meta: &serde_json::Value) -> Result<()> {
        self.t
            .prepare_cached("UPDATE trials SET run_metadata = ?1 WHERE idx = ?2")?
            .execute(params![meta.to_string(), index as i64])?;
        Ok(())
    }

    fn open_workers(&mut self) -> Result<Vec<i64>> {
        let mut st = self
            .t
            .prepare_cached("SELECT id FROM sessions WHERE ended_at IS NULL AND taken_over IS NULL ORDER BY id")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
    }

    fn take_over(&mut self, dead: i64, alive: &dyn Fn(&Worker) -> bool) -> Result<bool> {
        let sql =
            format!("SELECT {WORKER_COLUMNS} FROM sessions WHERE id = ?1 AND taken_over IS NULL AND ended_at IS NULL");
        let Some(w) = self.t.prepare_cached(&sql)?.query_row([dead], worker_row).optional()? else { return Ok(false) };
        // Its lease is judged again here: a renewal since it was found dead saves it.
        if alive(&w) {
            return Ok(false);
        }
        self.t
            .prepare_cached("UPDATE sessions SET taken_over = ?1 WHERE id = ?2")?
            .execute(params![self.time, dead])?;
        Ok(true)
    }

    fn claim(&mut self, index: u64, seen: Option<i64>, me: i64) -> Result<bool> {
        let n = self
            .t
            .prepare_cached("UPDATE trials SET holder = ?1 WHERE idx = ?2 AND holder IS ?3")?
            .execute(params![me, index as i64, seen])?;
        if n == 1 {
            self.event(Some(index), "held", Some(&format!("by worker #{me}")))?;
        }
        Ok(n == 1)
    }

    fn open_trials(&mut self) -> Result<Vec<Trial>> {
        let sql = format!(
            "SELECT {TRIAL_COLUMNS} FROM trials WHERE status IN ('CANDIDATE', 'STAGED', 'RUNNING') ORDER BY idx"
        );
        let rows = self.t.prepare_cached(&sql)?.query_map([], trial_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn next_index(&mut self) -> Result<u64> {
        Ok(self.t.query_row("SELECT coalesce(max(idx) + 1, 0) FROM trials", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn hold(&mut self, index: u64, worker: Option<i64>) -> Result<()> {
        self.t
            .prepare_cached("UPDATE trials SET holder = ?1 WHERE idx = ?2")?
            .execute(params![worker, index as i64])?;
        self.event(Some(index), "held", None)
    }

    fn observation(&mut self, o: &Observation) -> Result<()> {
        self.t
            .prepare_cached(
                "INSERT INTO observations (trial, metric, progression, mean, sem, final, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![o.trial as i64, o.metric, o.progression, o.mean, o.sem, o.is_final, self.time])?;
        Ok(())
    }

    fn set_generator_state(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        self.t
            .prepare_cached("INSERT OR REPLACE INTO generator_state (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value.to_string()])?;
        Ok(())
    }

    fn event(&mut self, trial: Option<u64>, kind: &str, message: Option<&str>) -> Result<()> {
        self.t
            .prepare_cached("INSERT INTO events (time, session, trial, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![self.time, self.worker, trial.map(|x| x as i64), kind, message])?;
        Ok(())
    }

    fn changes(&mut self, after: i64, me: i64) -> Result<Changes> {
        // One look at the events since the cursor first: most often only this worker's own.
        let (cursor, others): (i64, i64) = self.t.query_row(
            "SELECT coalesce(max(id), ?1), count(*) FILTER (WHERE trial IS NOT NULL AND (session IS NULL OR session != ?2))
             FROM events WHERE id > ?1",
            params![after, me],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if others == 0 {
            return Ok(Changes { cursor, ..Default::default() });
        }
        // Two queries whatever the number of changes: the rows, and the finals of those.
        let changed = "SELECT DISTINCT trial FROM events WHERE id > ?1 AND id <= ?2 AND trial IS NOT NULL
                         AND (session IS NULL OR session != ?3)";
        let sql = format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE idx IN ({changed}) ORDER BY idx");
        let trials = self
            .t
            .prepare_cached(&sql)?
            .query_map(params![after, cursor, me], trial_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let sql = format!(
            "SELECT o.trial, o.metric, o.progression, o.mean, o.sem, o.final FROM observations o
             JOIN trials t ON t.idx = o.trial
             WHERE o.final = 1 AND t.status NOT IN ('CANDIDATE', 'STAGED', 'RUNNING') AND o.trial IN ({changed})
             ORDER BY o.trial, o.rowid"
        );
        let finals = self
            .t
            .prepare_cached(&sql)?
            .query_map(params![after, cursor, me], observation_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Changes { cursor, trials, finals })
    }

    fn trial(&mut self, index: u64) -> Result<Option<Trial>> {
        let sql = format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE idx = ?1");
        Ok(self.t.prepare_cached(&sql)?.query_row([index as i64], trial_row).optional()?)
    }

    fn generator_state(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        let s: Option<String> =
            self.t.query_row("SELECT value FROM generator_state WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        Ok(match s {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }
}

/// A new store in the file `tmp`: the schema, then `fill`, in one transaction; the only
/// connection closes, folding the WAL in, so the file is complete alone.
fn build_at(tmp: &Path, fill: impl FnOnce(&rusqlite::Transaction) -> Result<()>) -> Result<()> {
    let conn = Connection::open(tmp)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    migrate(&tx, 0)?;
    fill(&tx)?;
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// Put the new file `tmp` at `path` unless something is there already (then `tmp` is left
/// for the caller to remove, and the store there is used): a hard link where the
/// filesystem has them, else a rename that replaces nothing.
fn place_new(tmp: &Path, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => match renameat_with(CWD, tmp, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

/// `file:` URI of a path, for SQLite's URI parameters.
fn sqlite_uri(path: &Path, read_only: bool) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' | 0x80..=0xff => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(b as char),
        }
    }
    uri.push_str(if read_only { "?mode=ro" } else { "?mode=rw" });
    uri
}

/// Whether this process may write the file and create files beside it.
fn writable(path: &Path) -> bool {
    let ok = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    ok(path) && path.parent().is_some_and(|d| ok(if d.as_os_str().is_empty() { Path::new(".") } else { d }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LedgerExt;
    use std::time::SystemTime;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("x.db"), Durability::Normal).unwrap();
        (d, s)
    }

    fn new_trial(s: &mut SqliteStore, i: u64) {
        let p = serde_json::json!({"x": 1});
        s.tx(|t| {
            t.insert_trial(&NewTrial {
                index: i,
                arm_key: "k",
                parameters: &p,
                generation: "sobol",
                rerun_of: None,
                attempt: 1,
                session: 1,
            })
        })
        .unwrap();
    }

    /// A store as an optx of schema 1 left it.
    fn schema_1_store(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c
    }

    fn worker(pid: u32) -> NewWorker<'static> {
        NewWorker { command: "optx run", pid, process_start: Some(1), host: "h", lease_seconds: 60.0 }
    }

    #[test]
    fn a_legacy_owner_keeps_its_store() {
        let d = tempfile::tempdir().unwrap();
        // An optx from before leases that still holds its store (its owner row).
        let old = d.path().join("old.db");
        let c = schema_1_store(&old);
        c.execute("INSERT INTO owner (id, pid, process_start, host, since) VALUES (1, 77, 1, 'h', 't')", []).unwrap();
        drop(c);
        let mut s = SqliteStore::open_existing(&old).unwrap();
        assert!(
            matches!(s.join(&worker(12), true, &|w| w.lease_runs(SystemTime::now())), Err(StoreError::Owned(w)) if w.pid == 77)
        );
        s.join(&worker(12), true, &|_| false).unwrap();
    }

    #[test]
    fn a_store_of_schema_1_is_upgraded_by_its_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("old.db");
        drop(schema_1_store(&path));
        // Opened (by a reader, or by a run that is refused), it stays as it is.
        let s = SqliteStore::open_existing(&path).unwrap();
        assert!(s.id().is_err());
        drop(s);
        let r = SqliteStore::open_read(&path).unwrap();
        assert_eq!(r.trial_counts().unwrap(), (0, 0));
        drop(r);
        let mut s = SqliteStore::open_existing(&path).unwrap();
        s.upgrade().unwrap();
        let id = s.id().unwrap();
        assert_eq!(id.len(), 32);
        s.upgrade().unwrap();
        assert_eq!(s.id().unwrap(), id, "upgrading twice changes nothing");
        let v: i64 = s.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_backup_is_a_whole_store_and_never_overwrites() {
        let (d, mut s) = store();
        for i in 0..50 {
            new_trial(&mut s, i);
        }
        let dest = d.path().join("copy.db");
        s.backup(&dest).unwrap();
        let c = SqliteStore::open_read(&dest).unwrap();
        assert_eq!(c.trial_counts().unwrap(), (50, 50));
        assert_eq!(c.id().unwrap(), s.id().unwrap());
        assert!(matches!(s.backup(&dest), Err(StoreError::Unusable(_))));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (d, s) = store();
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let e = SqliteStore::open_existing(&d.path().join("x.db")).err().unwrap();
        assert!(e.to_string().contains("newer optx"), "{e}");
    }
}
