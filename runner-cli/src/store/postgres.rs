//! The server store: an experiment's ledger in a PostgreSQL database, for workers on many
//! hosts. Each experiment is a schema of its own (named as the experiment), so several
//! experiments share one database; `optx_meta` in it holds the schema version (forward
//! migrations, a newer one is refused), the store's identity and the commit counter.
//!
//! One connection per optx process (the synchronous `postgres` client: its runtime stays
//! inside the client, nothing async reaches the scheduler). Writers are serialized as on
//! SQLite: every transaction first takes the experiment's lock (an advisory lock), so
//! the change feed, the trial index, the arm check and the budget decided in it are the
//! ledger's, and event ids grow in commit order (they are allocated under that lock).
//!
//! When the connection breaks (the server restarted), the client reconnects with backoff.
//! A transaction cut off before its commit is replayed, statement by statement, on the new
//! connection if no other transaction committed since it began (the counter in `optx_meta`
//! says so): the database is then as the transaction first saw it, and every write must
//! change as many rows as it did. A commit whose answer was lost is looked up by its token
//! in `optx_commits`. Otherwise the worker stops with an error, and its trials are taken
//! over by the others: nothing is lost or done twice.

use std::cell::{RefCell, RefMut};
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row};

use super::{
    fnv1a, now, Cell, Changes, Dump, ExperimentRow, Ledger, NewTrial, NewWorker, Result, StoreError, TransitionData,
    Tx, Worker, TABLES,
};
use crate::domain::{Goal, Observation, Trial, TrialStatus};

/// The schema of a server store this optx writes (its own numbering).
pub const PG_SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE optx_meta (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    version     BIGINT NOT NULL,
    uuid        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    tx_seq      BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE optx_commits (seq BIGINT PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE experiment (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    name        TEXT NOT NULL,
    spec_toml   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    spec_path   TEXT NOT NULL,
    base_dir    TEXT NOT NULL,
    seed        BIGINT NOT NULL,
    overrides   TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE trials (
    idx           BIGINT PRIMARY KEY,
    status        TEXT NOT NULL,
    status_code   BIGINT NOT NULL,
    lost          BOOLEAN NOT NULL DEFAULT false,
    arm_key       TEXT NOT NULL,
    parameters    TEXT NOT NULL,
    generation    TEXT NOT NULL,
    rerun_of      BIGINT,
    attempt       BIGINT NOT NULL DEFAULT 1,
    slot          BIGINT,
    session       BIGINT NOT NULL,
    feasible      BOOLEAN,
    reason        TEXT,
    run_metadata  TEXT,
    stop_metadata TEXT,
    trial_dir     TEXT,
    created_at    TEXT NOT NULL,
    staged_at     TEXT,
    started_at    TEXT,
    completed_at  TEXT,
    holder        BIGINT
);
CREATE INDEX trials_arm ON trials(arm_key);
CREATE INDEX trials_open ON trials(status) WHERE status IN ('CANDIDATE', 'STAGED', 'RUNNING');
CREATE TABLE observations (
    id          BIGINT PRIMARY KEY,
    trial       BIGINT NOT NULL,
    metric      TEXT NOT NULL,
    progression DOUBLE PRECISION,
    mean        DOUBLE PRECISION NOT NULL,
    sem         DOUBLE PRECISION,
    final       BOOLEAN NOT NULL DEFAULT false,
    time        TEXT NOT NULL
);
CREATE INDEX observations_trial ON observations(trial, metric);
CREATE TABLE generator_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id      BIGINT PRIMARY KEY,
    time    TEXT NOT NULL,
    session BIGINT,
    trial   BIGINT,
    kind    TEXT NOT NULL,
    message TEXT
);
CREATE TABLE sessions (
    id            BIGINT PRIMARY KEY,
    command       TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    process_start BIGINT,
    host          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    exit_code     BIGINT,
    renewed_at    TEXT,
    lease_seconds DOUBLE PRECISION,
    taken_over    TEXT
);
"#;

/// How long after connecting again a worker takes no other worker over.
const RECONNECT_GRACE: Duration = Duration::from_secs(15);
/// How long a broken connection is retried before the store gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);
/// How long a writer waits for the experiment's lock (another worker may hold it while it
/// computes a Bayesian proposal).
const LOCK_TIMEOUT: &str = "120s";

/// A parameter of a statement, owned, so that a transaction can be replayed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    I(Option<i64>),
    F(Option<f64>),
    T(Option<String>),
    B(Option<bool>),
}

impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::I(x) => x.to_sql(ty, out),
            V::F(x) => x.to_sql(ty, out),
            V::T(x) => x.to_sql(ty, out),
            V::B(x) => x.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::I(x) => x.to_sql_checked(ty, out),
            V::F(x) => x.to_sql_checked(ty, out),
            V::T(x) => x.to_sql_checked(ty, out),
            V::B(x) => x.to_sql_checked(ty, out),
        }
    }
}

impl From<i64> for V {
    fn from(x: i64) -> V {
        V::I(Some(x))
    }
}
impl From<u64> for V {
    fn from(x: u64) -> V {
        V::I(Some(x as i64))
    }
}
impl From<Option<i64>> for V {
    fn from(x: Option<i64>) -> V {
        V::I(x)
    }
}
impl From<Option<u64>> for V {
    fn from(x: Option<u64>) -> V {
        V::I(x.map(|x| x as i64))
    }
}
impl From<f64> for V {
    fn from(x: f64) -> V {
        V::F(Some(x))
    }
}
impl From<Option<f64>> for V {
    fn from(x: Option<f64>) -> V {
        V::F(x)
    }
}
impl From<bool> for V {
    fn from(x: bool) -> V {
        V::B(Some(x))
    }
}
impl From<Option<bool>> for V {
    fn from(x: Option<bool>) -> V {
        V::B(x)
    }
}
impl From<&str> for V {
    fn from(x: &str) -> V {
        V::T(Some(x.to_string()))
    }
}
impl From<String> for V {
    fn from(x: String) -> V {
        V::T(Some(x))
    }
}
impl From<Option<&str>> for V {
    fn from(x: Option<&str>) -> V {
        V::T(x.map(str::to_string))
    }
}
impl From<Option<String>> for V {
    fn from(x: Option<String>) -> V {
        V::T(x)
    }
}

macro_rules! p {
    ($($x:expr),* $(,)?) => { vec![$(V::from($x)),*] };
}

fn refs(ps: &[V]) -> Vec<&(dyn ToSql + Sync)> {
    ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// A break of the connection (the server went away, restarted, or shuts down): worth a
/// new connection, unlike an error of the statement.
fn broken(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // 08: connection exception; 57P01-03: the server shuts down or starts.
        Some(c) => c.code().starts_with("08") || matches!(c.code(), "57P01" | "57P02" | "57P03"),
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

fn is_broken(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(p) if broken(p))
}

/// What an open connection is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `run`: the experiment's schema is created if there is none.
    Create,
    /// `resume`, `ask`, `tell`...: it must exist.
    Existing,
    /// `status`, `trials`...: it must exist; nothing is written.
    Read,
    /// `backup` into the server: connected only (`restore` creates and fills the schema
    /// in one transaction).
    Restore,
}

pub struct PgStore {
    /// The connection (none once it broke): read methods take `&self`.
    client: RefCell<Option<Client>>,
    /// The statements prepared on this connection, by their text: each runs in one round
    /// trip (a statement not prepared takes two).
    stmts: RefCell<std::collections::HashMap<String, postgres::Statement>>,
    /// The server's clock less this host's, in seconds, measured at each connection: every
    /// time the store keeps is the server's, so that hosts whose clocks differ agree on
    /// whose lease ran out.
    offset: std::cell::Cell<f64>,
    /// The server process of the current connection (pid, start), to end it from the next.
    backend: std::cell::Cell<Option<(i32, String)>>,
    /// When this store last connected again after a break: for a while after, it takes no
    /// other worker over (they are connecting again too, and will renew).
    reconnected: std::cell::Cell<Option<Instant>>,
    config: postgres::Config,
    /// The URL as shown (no password).
    shown: String,
    schema: String,
    writer: bool,
    /// The worker whose lease every transaction checks first.
    fence: Option<i64>,
    renewed: Option<(Instant, Duration)>,
}

/// `"name"`: a quoted identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The password for a connection that has none in its URL: `PGPASSWORD`, else the first
/// matching line of `~/.pgpass` (or `PGPASSFILE`), as libpq reads them.
fn password_for(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Some(p);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let meta = std::fs::metadata(&file).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        // libpq ignores a password file that others can read.
        if meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    pgpass_lookup(&text, host, port, db, user)
}

/// The password of the first line of a password file that matches.
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let port = port.to_string();
        let want = [host, port.as_str(), db, user];
        if fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4].clone());
        }
    }
    None
}

impl PgStore {
    /// Connect to the database of `url` and open the experiment's schema there (`experiment`
    /// none: the database's only experiment, to read it).
    pub fn open(url: &str, experiment: Option<&str>, mode: Mode) -> Result<PgStore> {
        let shown = crate::domain::redact_url(url);
        let mut config: postgres::Config =
            url.parse().map_err(|e| StoreError::Unusable(format!("{shown} is not a usable PostgreSQL URL: {e}")))?;
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        let user = config.get_user().unwrap_or_default().to_string();
        if config.get_dbname().is_none() {
            config.dbname(&user);
        }
        if config.get_password().is_none() {
            let host = match config.get_hosts().first() {
                Some(postgres::config::Host::Tcp(h)) => h.clone(),
                _ => "localhost".into(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            if let Some(p) = password_for(&host, port, config.get_dbname().unwrap_or_default(), &user) {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("optx").keepalives(true).keepalives_idle(Duration::from_secs(15));
        let mut client = config.connect(NoTls).map_err(|e| connect_error(&shown, &e))?;
        // Connected: what fails from here (no privilege to create a schema, say) is still
        // bad input, said before anything is written.
        let where_ = shown.clone();
        let opened = (move || -> Result<PgStore> {
            let schema = match experiment {
                Some(e) => e.to_string(),
                None => only_experiment(&mut client, &shown)?,
            };
            if schema.is_empty() || schema.len() > 63 {
                return Err(StoreError::Unusable(format!(
                    "the experiment name `{schema}` cannot name a schema in {shown}: it needs 1 to 63 bytes"
                )));
            }
            let s = PgStore {
                client: RefCell::new(None),
                stmts: RefCell::new(std::collections::HashMap::new()),
                offset: std::cell::Cell::new(0.0),
                backend: std::cell::Cell::new(None),
                reconnected: std::cell::Cell::new(None),
                config,
                shown,
                schema,
                writer: mode != Mode::Read,
                fence: None,
                renewed: None,
            };
            s.prepare(&mut client)?;
            if mode == Mode::Restore {
                *s.client.borrow_mut() = Some(client);
                return Ok(s);
            }
            let exists = exists(&mut client, &s.schema)?;
            if !exists && mode == Mode::Create {
                s.create(&mut client)?;
            } else if !exists {
                return Err(StoreError::Unusable(format!(
                    "there is no store of the experiment `{}` in {}",
                    s.schema, s.shown
                )));
            }
            let version: i64 = client.query_one("SELECT version FROM optx_meta WHERE id = 1", &[])?.get(0);
            if version > PG_SCHEMA_VERSION {
                return Err(StoreError::Unusable(format!(
                "the experiment `{}` in {} was written by a newer optx (store schema {version}; this optx reads up to {PG_SCHEMA_VERSION}): upgrade optx",
                s.schema, s.shown
            )));
            }
            s.warm(&mut client)?;
            *s.client.borrow_mut() = Some(client);
            Ok(s)
        })();
        opened.map_err(|e| match e {
            StoreError::Postgres(p) => {
                let why = p.as_db_error().map_or_else(|| p.to_string(), |d| d.message().to_string());
                StoreError::Unusable(format!("cannot open the experiment's store in {where_}: {why}"))
            }
            e => e,
        })
    }

    /// Now, on the server's clock, as stored.
    fn server_now(&self) -> String {
        shift(&now(), self.offset.get())
    }

    /// Settings of a new connection: the experiment's schema first, the lock timeout; and
    /// the server's clock against this host's.
    fn prepare(&self, c: &mut Client) -> Result<()> {
        let before = std::time::SystemTime::now();
        let server: f64 = c.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])?.get(0);
        let after = std::time::SystemTime::now();
        let local = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        // Clocks within a second of each other (synchronized hosts) are taken as one: a
        // lease is judged in seconds, and the times stored stay the writer's own.
        let offset = server - (local(before) + local(after)) / 2.0;
        self.offset.set(if offset.abs() < 1.0 { 0.0 } else { offset });
        let me =
            c.query_one("SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()", &[])?;
        let old = self.backend.replace(Some((me.get(0), me.get(1))));
        // The connection before this one, if its server process still lives (the network
        // broke, not the server): ended now, so that no transaction of it holds the lock.
        if let Some((pid, start)) = old {
            let _ = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                &[&pid, &start],
            );
            self.reconnected.set(Some(Instant::now()));
        }
        // Values written into statements assume standard strings; the server notices a
        // client gone (a host down, a network cut) within about 30 s, and ends its
        // transaction and the lock it held.
        let mut sql = format!(
            "SET search_path TO {}; SET TIME ZONE 'UTC'; SET standard_conforming_strings = on;
             SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3;
             SET tcp_user_timeout = 30000;",
            ident(&self.schema)
        );
        if self.writer {
            sql.push_str(&format!(" SET lock_timeout = '{LOCK_TIMEOUT}';"));
        }
        c.batch_execute(&sql)?;
        Ok(())
    }

    /// The experiment's schema and tables, created whole in one transaction (two first
    /// runs at once agree on one).
    fn create(&self, c: &mut Client) -> Result<()> {
        let mut t = c.transaction()?;
        if !self.create_in(&mut t)? {
            return Ok(t.commit()?);
        }
        t.commit()?;
        Ok(())
    }

    /// Inside `t`, under the creators' lock: the schema and its tables, unless another
    /// creator made them first (false).
    fn create_in(&self, t: &mut postgres::Transaction) -> Result<bool> {
        t.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("optx:{}", self.schema)])?;
        if exists_in(t, &self.schema)? {
            return Ok(false);
        }
        t.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {0}; SET LOCAL search_path TO {0};",
            ident(&self.schema)
        ))?;
        t.batch_execute(SCHEMA)?;
        t.execute(
            "INSERT INTO optx_meta (id, version, uuid, created_at) VALUES (1, $1, $2, $3)",
            &[&PG_SCHEMA_VERSION, &super::new_uuid(), &now()],
        )?;
        Ok(true)
    }

    /// The statement that takes the experiment's lock: an advisory lock on its name (the
    /// name written in, never taken from the session, so that no lookup can miss it).
    fn lock_sql(&self) -> String {
        format!("SELECT pg_advisory_xact_lock(hashtext({}))", literal(&V::T(Some(format!("optx:{}", self.schema)))))
    }

    fn connect(&self) -> Result<Client> {
        let mut c = self.config.connect(NoTls).map_err(StoreError::Postgres)?;
        self.prepare(&mut c)?;
        self.stmts.borrow_mut().clear();
        self.warm(&mut c)?;
        Ok(c)
    }

    /// A writer's statements, prepared on a new connection.
    fn warm(&self, c: &mut Client) -> Result<()> {
        if self.writer {
            for q in sql::all() {
                prepared(&self.stmts, c, &q)?;
            }
        }
        Ok(())
    }

    /// The connection, made again (with backoff, for up to `RECONNECT_FOR`) if it broke.
    fn conn(&self) -> Result<RefMut<'_, Client>> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            let start = Instant::now();
            let mut wait = Duration::from_millis(50);
            let mut said = false;
            loop {
                match self.connect() {
                    Ok(mut c) => {
                        // A worker renews its lease at once: the break may have outlasted it.
                        if let Some(w) = self.fence {
                            let _ = c.execute(
                                "UPDATE sessions SET renewed_at = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL",
                                &[&self.server_now(), &w],
                            );
                        }
                        if said {
                            eprintln!("optx: connected to {} again", self.shown);
                        }
                        *slot = Some(c);
                        break;
                    }
                    Err(e) if is_broken(&e) && start.elapsed() < RECONNECT_FOR => {
                        if !said {
                            eprintln!("optx: lost the connection to {} ({e}); connecting again", self.shown);
                            said = true;
                        }
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        RefMut::filter_map(slot, |c| c.as_mut()).map_err(|_| StoreError::Other("no connection".into()))
    }

    /// Run `f` on the connection; a broken connection is made again and `f` run again
    /// (for reads and writes that do the same twice).
    fn retry<T>(&self, mut f: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>) -> Result<T> {
        loop {
            let mut c = self.conn()?;
            match f(&mut c) {
                Ok(x) => return Ok(x),
                Err(e) if broken(&e) => {
                    drop(c);
                    *self.client.borrow_mut() = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A read outside a transaction.
    fn read(&self, sql: &str, ps: Vec<V>) -> Result<Vec<Row>> {
        self.retry(|c| {
            let st = prepared(&self.stmts, c, sql)?;
            c.query(&st, &refs(&ps))
        })
    }

    fn read_with(&self, sql: &str, ps: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.retry(|c| {
            let st = prepared(&self.stmts, c, sql)?;
            c.query(&st, ps)
        })
    }

    fn exec(&self, sql: &str, ps: Vec<V>) -> Result<u64> {
        self.retry(|c| {
            let st = prepared(&self.stmts, c, sql)?;
            c.execute(&st, &refs(&ps))
        })
    }

    fn rollback(&self) {
        if let Some(c) = self.client.borrow_mut().as_mut() {
            let _ = c.batch_execute("ROLLBACK");
        }
    }

    /// One transaction under the experiment's lock, replayed on a new connection if the old
    /// one broke before the commit was known (see the module's documentation).
    fn run_tx(&mut self, fenced: bool, f: &mut dyn FnMut(&mut PgTx) -> Result<()>) -> Result<()> {
        let token = super::new_uuid();
        let asked = Instant::now();
        // The fence (a worker taken over writes nothing more), and the renewal of its lease
        // when a sixth of it passed, go with the lock: no round trip of their own.
        let fence = if fenced { self.fence } else { None };
        let renew = match (fence, self.renewed) {
            (Some(_), Some((at, every))) if at.elapsed() >= every => Some(self.server_now()),
            _ => None,
        };
        let lock = self.lock_sql();
        let (seq, taken) = loop {
            let mut c = self.conn()?;
            match begin(&mut c, &lock, fence, renew.as_deref()) {
                Ok(x) => break x,
                Err(e) if broken(&e) => {
                    drop(c);
                    *self.client.get_mut() = None;
                }
                Err(e) => {
                    drop(c);
                    self.rollback();
                    return Err(lock_error(e));
                }
            }
        };
        let held = Instant::now();
        if taken {
            self.rollback();
            return Err(StoreError::LeaseLost);
        }
        let time = self.server_now();
        let mut tx = PgTx {
            store: self,
            seq,
            fence,
            time,
            log: Vec::new(),
            deferred: Vec::new(),
            worker: fence,
            in_db: Duration::ZERO,
        };
        let result = f(&mut tx);
        let (log, deferred, in_db) = (std::mem::take(&mut tx.log), std::mem::take(&mut tx.deferred), tx.in_db);
        let committing = Instant::now();
        if let Err(e) = result {
            self.rollback();
            return Err(e);
        }
        // The commit goes on the connection that began the transaction, never on a new one
        // (that would commit the deferred writes alone): a connection gone is a replay.
        let mut outcome = match self.client.get_mut().as_mut().filter(|c| !c.is_closed()) {
            Some(c) => commit(c, seq, &token, &deferred).map_err(Replay::from),
            None => Err(Replay::Gone),
        };
        loop {
            match outcome {
                Ok(()) => break,
                Err(Replay::Broken | Replay::Gone) => {
                    *self.client.get_mut() = None;
                    outcome = self.replay(seq, fence, &token, &log, &deferred);
                }
                Err(Replay::Stop(e)) => {
                    self.rollback();
                    return Err(e);
                }
            }
        }
        if renew.is_some() {
            if let Some((at, _)) = &mut self.renewed {
                *at = Instant::now();
            }
        }
        tracing::debug!(
            target: "optx::store::lock",
            waited_us = held.duration_since(asked).as_micros() as u64,
            held_us = held.elapsed().as_micros() as u64,
            server_us = (in_db + committing.elapsed()).as_micros() as u64,
            "transaction"
        );
        Ok(())
    }

    /// After a broken connection at the commit: the transaction committed (its token is
    /// there), or nothing committed since it began and it runs again whole, or the worker
    /// must stop.
    fn replay(
        &self,
        seq: i64,
        fence: Option<i64>,
        token: &str,
        log: &[Stmt],
        deferred: &[String],
    ) -> std::result::Result<(), Replay> {
        let mut c = self.conn().map_err(Replay::Stop)?;
        match rerun(&mut c, &self.lock_sql(), seq, fence, Some(token), log) {
            Ok(Rerun::Ready) => commit(&mut c, seq, token, deferred).map_err(Replay::from),
            Ok(Rerun::Committed) => {
                let _ = c.batch_execute("ROLLBACK");
                Ok(())
            }
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The statement `sql`, prepared on `c` once.
fn prepared(
    cache: &RefCell<std::collections::HashMap<String, postgres::Statement>>,
    c: &mut Client,
    sql: &str,
) -> std::result::Result<postgres::Statement, postgres::Error> {
    if let Some(st) = cache.borrow().get(sql) {
        return Ok(st.clone());
    }
    let st = c.prepare(sql)?;
    cache.borrow_mut().insert(sql.to_string(), st.clone());
    Ok(st)
}

/// Why a replay did not commit: the connection broke again, or was gone (try again), or it
/// cannot be.
enum Replay {
    Broken,
    Gone,
    Stop(StoreError),
}

/// What a replay found under the lock.
enum Rerun {
    /// The statements ran again: the transaction can commit.
    Ready,
    /// The transaction had committed before the connection broke (its token is there).
    Committed,
}

impl From<postgres::Error> for Replay {
    fn from(e: postgres::Error) -> Replay {
        if broken(&e) {
            Replay::Broken
        } else {
            Replay::Stop(e.into())
        }
    }
}

/// In a new transaction on a new connection, run again what a transaction cut off had run:
/// only if nothing committed since it began, and each write must change what it did. With
/// the lock held, the old transaction has ended: if its commit went through (`token`,
/// once it was sent), that is a definite answer.
fn rerun(
    c: &mut Client,
    lock: &str,
    seq: i64,
    fence: Option<i64>,
    token: Option<&str>,
    log: &[Stmt],
) -> std::result::Result<Rerun, Replay> {
    let (now_seq, taken) = begin(c, lock, fence, None)?;
    if let Some(token) = token {
        if c.query_opt("SELECT 1 FROM optx_commits WHERE token = $1", &[&token])?.is_some() {
            return Ok(Rerun::Committed);
        }
    }
    if taken {
        let _ = c.batch_execute("ROLLBACK");
        return Err(Replay::Stop(StoreError::LeaseLost));
    }
    if now_seq != seq {
        let _ = c.batch_execute("ROLLBACK");
        return Err(Replay::Stop(StoreError::Other(
            "the connection to the database broke during a transaction, and other workers wrote since: this worker stops (the others take its trials over)".into(),
        )));
    }
    for s in log {
        if s.batch {
            c.batch_execute(&s.sql)?;
            continue;
        }
        let n = c.execute(s.sql.as_str(), &refs(&s.params))?;
        if s.rows.is_some_and(|r| r != n) {
            let _ = c.batch_execute("ROLLBACK");
            return Err(Replay::Stop(StoreError::Other(
                "a transaction replayed after a broken connection did not change what it had: this worker stops".into(),
            )));
        }
    }
    Ok(Rerun::Ready)
}

/// The commit, and its token (a lost answer is looked up after a reconnect), in one round
/// trip: the lock is held until the server answers, so every trip counts.
fn commit(c: &mut Client, seq: i64, token: &str, deferred: &[String]) -> std::result::Result<(), postgres::Error> {
    let next = seq + 1;
    let writes: String = deferred.iter().map(|w| format!("{w};\n")).collect();
    // Both values are ours (a number, and hex digits): safe to write into the text.
    debug_assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let prune = if next % 1000 == 0 {
        // The tokens of the last 10,000 commits are kept: enough for a reconnect to find its own.
        format!("DELETE FROM optx_commits WHERE seq <= {};", next - 10_000)
    } else {
        String::new()
    };
    c.batch_execute(&format!(
        "{writes}UPDATE optx_meta SET tx_seq = {next} WHERE id = 1; INSERT INTO optx_commits (seq, token) VALUES ({next}, '{token}'); {prune} COMMIT"
    ))
}

/// A transaction, and the experiment's lock, in one round trip: returns the commit counter
/// and, for a fenced worker, whether it was taken over (its lease renewed first, at `renew`).
///
/// The lock is a transaction-level advisory lock on the experiment's name: its waiters
/// queue, and each commit wakes the next one only (a row lock, `SELECT ... FOR UPDATE`,
/// wakes every waiter at each commit). What follows the lock is read by statements of
/// their own, so it is the latest.
fn begin(
    c: &mut Client,
    lock: &str,
    fence: Option<i64>,
    renew: Option<&str>,
) -> std::result::Result<(i64, bool), postgres::Error> {
    // READ COMMITTED whatever the server's default: each statement after the lock sees
    // every commit before it.
    let mut sql = format!("BEGIN ISOLATION LEVEL READ COMMITTED; {lock};");
    // Our own values (a time we formatted, an id): safe to write into the text.
    if let (Some(w), Some(t)) = (fence, renew) {
        sql.push_str(&format!(
            " UPDATE sessions SET renewed_at = {} WHERE id = {w} AND taken_over IS NULL;",
            literal(&V::T(Some(t.to_string())))
        ));
    }
    match fence {
        Some(w) => sql.push_str(&format!(
            " SELECT tx_seq, (SELECT taken_over IS NOT NULL FROM sessions WHERE id = {w}) FROM optx_meta WHERE id = 1"
        )),
        None => sql.push_str(" SELECT tx_seq, false FROM optx_meta WHERE id = 1"),
    }
    for m in c.simple_query(&sql)? {
        if let postgres::SimpleQueryMessage::Row(r) = m {
            if let Some(seq) = r.get(0).and_then(|v| v.parse().ok()) {
                return Ok((seq, r.get(1) == Some("t")));
            }
        }
    }
    // No row: the experiment's schema lost its optx_meta (dropped by hand?).
    c.batch_execute("ROLLBACK")?;
    c.query_one("SELECT tx_seq FROM optx_meta WHERE id = 1", &[]).map(|r| (r.get(0), false))
}

/// A stored time moved by `secs` seconds (unchanged if it does not parse).
fn shift(t: &str, secs: f64) -> String {
    let Some(at) = super::parse_time(t) else { return t.to_string() };
    let d = Duration::from_secs_f64(secs.abs());
    let moved = if secs >= 0.0 { at.checked_add(d) } else { at.checked_sub(d) };
    moved.map_or_else(|| t.to_string(), |m| humantime::format_rfc3339_millis(m).to_string())
}

/// A value written into a statement's text (for writes sent together at the commit).
fn literal(v: &V) -> String {
    match v {
        V::I(Some(x)) => x.to_string(),
        V::F(Some(x)) if x.is_finite() => format!("'{x:?}'::float8"),
        V::F(Some(x)) if x.is_nan() => "'NaN'::float8".into(),
        V::F(Some(x)) => {
            if *x > 0.0 {
                "'Infinity'::float8".into()
            } else {
                "'-Infinity'::float8".into()
            }
        }
        V::T(Some(t)) => format!("'{}'", t.replace('\'', "''")),
        V::B(Some(b)) => b.to_string(),
        V::I(None) | V::F(None) | V::T(None) | V::B(None) => "NULL".into(),
    }
}

/// `sql` with its parameters (`$1`, `$2`...) written in, in one pass over our own text (a
/// value is never read again as text of the statement).
fn inline(sql: &str, ps: &[V]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        match rest[at + 1..at + 1 + digits].parse::<usize>().ok().and_then(|n| ps.get(n.wrapping_sub(1))) {
            Some(p) => out.push_str(&literal(p)),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

fn lock_error(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if c.code() == "55P03" => StoreError::Other(format!(
            "the experiment stayed locked by another worker for {LOCK_TIMEOUT}: is an optx frozen (stopped) while it writes?"
        )),
        _ => e.into(),
    }
}

fn connect_error(shown: &str, e: &postgres::Error) -> StoreError {
    let why = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s = x.to_string();
                src = x.source();
            }
            s
        }
    };
    let hint =
        if why.contains("password missing") { " (give it in the URL, in PGPASSWORD or in ~/.pgpass)" } else { "" };
    StoreError::Unusable(format!("cannot connect to {shown}: {why}{hint}"))
}

fn exists(c: &mut Client, schema: &str) -> Result<bool> {
    Ok(c.query_one("SELECT to_regclass(format('%I.optx_meta', $1::text)) IS NOT NULL", &[&schema])?.get(0))
}

/// Inside `create`'s transaction, after its lock: read from the catalog's rows (an MVCC
/// read that sees what another creator committed), not through the relation cache.
fn exists_in(t: &mut postgres::Transaction, schema: &str) -> Result<bool> {
    Ok(t.query_one(
        "SELECT count(*) > 0 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'optx_meta'",
        &[&schema],
    )?
    .get(0))
}

/// The experiments of a database (the schemas that hold an optx store).
fn experiments(c: &mut Client) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'optx_meta' ORDER BY table_schema",
        &[],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

fn only_experiment(c: &mut Client, shown: &str) -> Result<String> {
    let all = experiments(c)?;
    // What `run --fresh` set aside does not count.
    let current: Vec<&String> = all.iter().filter(|e| !e.contains(".bak-")).collect();
    if let [one] = current.as_slice() {
        return Ok((*one).clone());
    }
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StoreError::Unusable(format!("there is no store in {shown}: it holds no optx experiment"))),
        many => {
            let sep = if shown.contains('?') { '&' } else { '?' };
            Err(StoreError::Unusable(format!(
                "{shown} holds {} experiments ({}): name one, as in {shown}{sep}experiment={}",
                many.len(),
                many.join(", "),
                many[0]
            )))
        }
    }
}

/// A statement of a transaction as it ran: replayed after a broken connection.
struct Stmt {
    sql: String,
    params: Vec<V>,
    /// The rows a write changed (none for a read).
    rows: Option<u64>,
    /// Several statements with their values written in (the deferred writes).
    batch: bool,
}

/// A write transaction of the server store.
pub struct PgTx<'s> {
    store: &'s mut PgStore,
    seq: i64,
    fence: Option<i64>,
    time: String,
    log: Vec<Stmt>,
    /// Writes whose answer nothing needs (observations, the generator's state, events):
    /// sent with the commit, in one round trip, or before the next statement that reads.
    deferred: Vec<String>,
    worker: Option<i64>,
    /// Time spent waiting for the server's answers (for the workers benchmark).
    in_db: Duration,
}

impl PgTx<'_> {
    /// Run a statement of this transaction; on a broken connection, replay what ran so far
    /// on a new one (if nothing else committed since) and go on.
    fn run<T>(
        &mut self,
        sql: &str,
        ps: Vec<V>,
        write: bool,
        f: impl Fn(&mut Client, &postgres::Statement, &[&(dyn ToSql + Sync)]) -> std::result::Result<T, postgres::Error>,
        rows: impl Fn(&T) -> u64,
    ) -> Result<T> {
        // A read sees this transaction's writes: the deferred ones go first.
        if !write {
            self.flush()?;
        }
        loop {
            let started = Instant::now();
            let out = {
                let store = &mut *self.store;
                let c = store.client.get_mut().as_mut().ok_or_else(|| StoreError::Other("no connection".into()))?;
                prepared(&store.stmts, c, sql).and_then(|st| f(c, &st, &refs(&ps)))
            };
            self.in_db += started.elapsed();
            match out {
                Ok(x) => {
                    let rows = write.then(|| rows(&x));
                    self.log.push(Stmt { sql: sql.to_string(), params: ps, rows, batch: false });
                    return Ok(x);
                }
                Err(e) if broken(&e) => self.recover()?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn exec(&mut self, sql: &str, ps: Vec<V>) -> Result<u64> {
        self.run(sql, ps, true, |c, s, p| c.execute(s, p), |n| *n)
    }

    fn query(&mut self, sql: &str, ps: Vec<V>) -> Result<Vec<Row>> {
        self.run(sql, ps, false, |c, s, p| c.query(s, p), |_| 0)
    }

    /// A write sent with the commit (or before the next statement).
    fn defer(&mut self, sql: &str, ps: Vec<V>) {
        self.deferred.push(inline(sql, &ps));
    }

    /// Send the deferred writes now, as one statement of this transaction (it is then
    /// replayed with the others if the connection breaks).
    fn flush(&mut self) -> Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.deferred).join(";\n");
        loop {
            let c = self.store.client.get_mut().as_mut().ok_or_else(|| StoreError::Other("no connection".into()))?;
            match c.batch_execute(&batch) {
                Ok(()) => {
                    self.log.push(Stmt { sql: batch, params: Vec::new(), rows: None, batch: true });
                    return Ok(());
                }
                Err(e) if broken(&e) => self.recover()?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a broken connection: a new one, in a new transaction that has run again what
    /// this one had (if nothing else committed since), or the error that stops the worker.
    fn recover(&mut self) -> Result<()> {
        *self.store.client.get_mut() = None;
        loop {
            let mut c = self.store.conn()?;
            // No token: the commit was not sent yet.
            match rerun(&mut c, &self.store.lock_sql(), self.seq, self.fence, None, &self.log) {
                Ok(_) => return Ok(()),
                Err(Replay::Broken | Replay::Gone) => {
                    drop(c);
                    *self.store.client.get_mut() = None;
                }
                Err(Replay::Stop(e)) => {
                    let _ = c.batch_execute("ROLLBACK");
                    return Err(e);
                }
            }
        }
    }
}

/// The event of the trial that the statement `cte` (a `WITH` part returning `idx`) wrote:
/// an `INSERT` that follows it, with its time, session, kind and message (SQL expressions).
fn event_of(cte: &str, time: &str, session: &str, kind: &str, message: &str) -> String {
    format!(
        "INSERT INTO events (id, time, session, trial, kind, message)
         SELECT (SELECT coalesce(max(id), 0) + 1 FROM events), {time}, {session}::bigint, idx, {kind}, {message}::text FROM {cte}"
    )
}

const TRIAL_COLUMNS: &str =
    "idx, status, lost, arm_key, parameters, generation, rerun_of, attempt, slot, session, feasible,
     reason, run_metadata, stop_metadata, trial_dir, created_at, staged_at, started_at, completed_at, holder";

fn trial_row(r: &Row) -> Trial {
    let json = |i: usize| r.get::<_, Option<String>>(i).and_then(|s| serde_json::from_str(&s).ok());
    Trial {
        index: r.get::<_, i64>(0) as u64,
        status: r.get::<_, String>(1).parse().unwrap_or(TrialStatus::Failed),
        lost: r.get(2),
        arm_key: r.get(3),
        parameters: json(4).unwrap_or(serde_json::Value::Null),
        generation: r.get(5),
        rerun_of: r.get::<_, Option<i64>>(6).map(|x| x as u64),
        attempt: r.get::<_, i64>(7) as u32,
        slot: r.get::<_, Option<i64>>(8).map(|x| x as usize),
        session: r.get(9),
        feasible: r.get(10),
        reason: r.get(11),
        run_metadata: json(12),
        stop_metadata: json(13),
        trial_dir: r.get(14),
        created_at: r.get(15),
        staged_at: r.get(16),
        started_at: r.get(17),
        completed_at: r.get(18),
        holder: r.get(19),
    }
}

const OBS_COLUMNS: &str = "trial, metric, progression, mean, sem, final";

fn observation_row(r: &Row) -> Observation {
    Observation {
        trial: r.get::<_, i64>(0) as u64,
        metric: r.get(1),
        progression: r.get(2),
        mean: r.get(3),
        sem: r.get(4),
        is_final: r.get(5),
    }
}

const WORKER_COLUMNS: &str =
    "id, command, pid, process_start, host, started_at, renewed_at, lease_seconds, ended_at, exit_code, taken_over";

/// A worker as stored, its lease's renewal moved from the server's clock (every worker
/// writes it in the server's time) to this host's, where `Worker::lease_runs` judges it.
fn worker_row(r: &Row, offset: f64) -> Worker {
    Worker {
        id: r.get(0),
        command: r.get(1),
        pid: r.get::<_, i64>(2) as u32,
        process_start: r.get::<_, Option<i64>>(3).map(|x| x as u64),
        host: r.get(4),
        started_at: r.get(5),
        renewed_at: r.get::<_, Option<String>>(6).map(|t| shift(&t, -offset)),
        lease_seconds: r.get(7),
        ended_at: r.get(8),
        exit_code: r.get::<_, Option<i64>>(9).map(|x| x as i32),
        taken_over: r.get(10),
    }
}

impl Ledger for PgStore {
    fn location(&self) -> String {
        let sep = if self.shown.contains('?') { '&' } else { '?' };
        format!("{}{sep}experiment={}", self.shown, self.schema)
    }

    fn id(&self) -> Result<String> {
        Ok(self.read("SELECT uuid FROM optx_meta WHERE id = 1", vec![])?[0].get(0))
    }

    fn upgrade(&mut self) -> Result<()> {
        // Version 1 is the first: nothing to migrate yet.
        Ok(())
    }

    fn join(&mut self, me: &NewWorker, exclusive: bool, alive: &dyn Fn(&Worker) -> bool) -> Result<i64> {
        let mut id = 0;
        let (command, host) = (me.command.to_string(), me.host.to_string());
        let (pid, start, lease) = (me.pid as i64, me.process_start.map(|x| x as i64), me.lease_seconds);
        self.run_tx(false, &mut |tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {WORKER_COLUMNS} FROM sessions WHERE ended_at IS NULL AND taken_over IS NULL ORDER BY id"
                ),
                vec![],
            )?;
            let time = tx.time.clone();
            let offset = tx.store.offset.get();
            for w in rows.iter().map(|r| worker_row(r, offset)) {
                if !alive(&w) {
                    tx.exec(
                        "UPDATE sessions SET taken_over = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL",
                        p![time.clone(), w.id],
                    )?;
                } else if exclusive {
                    return Err(StoreError::Owned(Box::new(w)));
                }
            }
            id = tx.query("SELECT coalesce(max(id), 0) + 1 FROM sessions", vec![])?[0].get(0);
            tx.exec(
                "INSERT INTO sessions (id, command, pid, process_start, host, started_at, renewed_at, lease_seconds)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
                p![id, command.clone(), pid, start, host.clone(), time.clone(), lease],
            )?;
            Ok(())
        })?;
        self.fence = Some(id);
        self.renewed = Some((Instant::now(), Duration::from_secs_f64(me.lease_seconds / 6.0)));
        Ok(id)
    }

    fn renew(&mut self, worker: i64) -> Result<()> {
        let n = self.exec(
            "UPDATE sessions SET renewed_at = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL",
            p![self.server_now(), worker],
        )?;
        if n == 1 {
            if let Some((at, _)) = &mut self.renewed {
                *at = Instant::now();
            }
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    fn leave(&mut self, worker: i64, exit_code: Option<i32>) -> Result<()> {
        self.exec(
            "UPDATE sessions SET ended_at = $1, exit_code = $2 WHERE id = $3 AND taken_over IS NULL AND ended_at IS NULL",
            p![self.server_now(), exit_code.map(i64::from), worker],
        )?;
        self.fence = None;
        self.renewed = None;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<Worker>> {
        Ok(self
            .read(&format!("SELECT {WORKER_COLUMNS} FROM sessions ORDER BY id"), vec![])?
            .iter()
            .map(|r| worker_row(r, self.offset.get()))
            .collect())
    }

    fn experiment(&self) -> Result<Option<ExperimentRow>> {
        let rows = self.read(
            "SELECT name, spec_toml, spec_path, base_dir, seed, overrides, created_at FROM experiment WHERE id = 1",
            vec![],
        )?;
        Ok(rows.first().map(|r| ExperimentRow {
            name: r.get(0),
            spec_toml: r.get(1),
            spec_path: std::path::PathBuf::from(r.get::<_, String>(2)),
            base_dir: std::path::PathBuf::from(r.get::<_, String>(3)),
            seed: r.get::<_, i64>(4) as u64,
            overrides: serde_json::from_str(&r.get::<_, String>(5)).unwrap_or_default(),
            created_at: r.get(6),
        }))
    }

    fn save_experiment(
        &mut self,
        name: &str,
        spec_toml: &str,
        spec_path: &std::path::Path,
        base_dir: &std::path::Path,
        seed: u64,
        overrides: &serde_json::Value,
        replace: bool,
    ) -> Result<()> {
        let on_conflict = if replace {
            "DO UPDATE SET spec_toml = $2, spec_hash = $3, spec_path = $4, base_dir = $5, seed = $6, overrides = $7, updated_at = $8"
        } else {
            "DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO experiment (id, name, spec_toml, spec_hash, spec_path, base_dir, seed, overrides, created_at, updated_at)
             VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) {on_conflict}"
        );
        let ps = p![
            name,
            spec_toml,
            fnv1a(spec_toml),
            spec_path.to_string_lossy().into_owned(),
            base_dir.to_string_lossy().into_owned(),
            seed as i64,
            overrides.to_string(),
            now()
        ];
        self.exec(&sql, ps)?;
        Ok(())
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        Ok(self
            .read(&format!("SELECT {TRIAL_COLUMNS} FROM trials ORDER BY idx"), vec![])?
            .iter()
            .map(trial_row)
            .collect())
    }

    fn last_event(&self) -> Result<i64> {
        Ok(self.read("SELECT coalesce(max(id), 0) FROM events", vec![])?[0].get(0))
    }

    fn trial_counts(&self) -> Result<(u64, u64)> {
        let r = self.read("SELECT count(*), count(*) FILTER (WHERE NOT lost) FROM trials", vec![])?;
        Ok((r[0].get::<_, i64>(0) as u64, r[0].get::<_, i64>(1) as u64))
    }

    fn curve_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, usize>> {
        let ids: Vec<i64> = trials.iter().map(|t| *t as i64).collect();
        let rows = self.read_with(
            "SELECT trial, count(*) FROM observations WHERE trial = ANY($1) AND NOT final AND progression IS NOT NULL GROUP BY trial",
            &[&ids],
        )?;
        let mut out: std::collections::HashMap<u64, usize> = trials.iter().map(|t| (*t, 0)).collect();
        for r in rows {
            out.insert(r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as usize);
        }
        Ok(out)
    }

    fn observations(&self) -> Result<Vec<Observation>> {
        Ok(self
            .read(&format!("SELECT {OBS_COLUMNS} FROM observations ORDER BY trial, id"), vec![])?
            .iter()
            .map(observation_row)
            .collect())
    }

    fn final_observations(&self) -> Result<Vec<Observation>> {
        Ok(self
            .read(&format!("SELECT {OBS_COLUMNS} FROM observations WHERE final ORDER BY trial, id"), vec![])?
            .iter()
            .map(observation_row)
            .collect())
    }

    fn status_counts(&self) -> Result<Vec<(String, bool, u64)>> {
        Ok(self
            .read("SELECT status, lost, count(*) FROM trials GROUP BY status, lost", vec![])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect())
    }

    fn feasible_count(&self) -> Result<u64> {
        Ok(
            self.read("SELECT count(*) FROM trials WHERE status = 'COMPLETED' AND feasible", vec![])?[0]
                .get::<_, i64>(0) as u64,
        )
    }

    fn best(&self, goal: &Goal) -> Result<Vec<(u64, Vec<f64>, serde_json::Value)>> {
        let metrics: Vec<String> = goal.metrics().into_iter().map(str::to_string).collect();
        let rows = self.read_with(
            "SELECT t.idx, o.metric, o.mean FROM trials t JOIN observations o ON o.trial = t.idx
             WHERE t.status = 'COMPLETED' AND t.feasible AND o.final AND o.metric = ANY($1)
             ORDER BY t.idx, o.id",
            &[&metrics],
        )?;
        let best = super::best_of(goal, rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))));
        let mut out = Vec::with_capacity(best.len());
        for (i, v) in best {
            let p: String = self.read("SELECT parameters FROM trials WHERE idx = $1", p![i])?[0].get(0);
            out.push((i, v, serde_json::from_str(&p).unwrap_or(serde_json::Value::Null)));
        }
        Ok(out)
    }

    fn generator_state(&self, key: &str) -> Result<Option<serde_json::Value>> {
        let rows = self.read("SELECT value FROM generator_state WHERE key = $1", p![key])?;
        match rows.first() {
            Some(r) => Ok(Some(serde_json::from_str(&r.get::<_, String>(0))?)),
            None => Ok(None),
        }
    }

    fn backup(&self, dest: &std::path::Path) -> Result<()> {
        super::sqlite::SqliteStore::restore(dest, &self.dump()?)
    }

    fn dump(&self) -> Result<Dump> {
        // One snapshot of every table: a repeatable-read transaction that writes nothing.
        let mut c = self.config.connect(NoTls)?;
        self.prepare(&mut c)?;
        let mut t =
            c.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start()?;
        let meta = t.query_one("SELECT uuid, created_at FROM optx_meta WHERE id = 1", &[])?;
        let mut dump = Dump { uuid: meta.get(0), created_at: meta.get(1), tables: Vec::new() };
        for (table, order, cols) in TABLES {
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let order = if *order == "rowid" { "id" } else { order };
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
            let mut rows = Vec::new();
            for r in t.query(&sql, &[])? {
                let mut row = Vec::with_capacity(cols.len());
                for (i, (_, kind)) in cols.iter().enumerate() {
                    row.push(match kind {
                        super::Kind::Int => r.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int),
                        super::Kind::Bool => r.get::<_, Option<bool>>(i).map_or(Cell::Null, |b| Cell::Int(b as i64)),
                        super::Kind::Real => r.get::<_, Option<f64>>(i).map_or(Cell::Null, Cell::Real),
                        super::Kind::Text => r.get::<_, Option<String>>(i).map_or(Cell::Null, Cell::Text),
                    });
                }
                rows.push(row);
            }
            dump.tables.push((table.to_string(), rows));
        }
        t.commit()?;
        Ok(dump)
    }

    fn set_aside(&mut self, tag: &str) -> Result<Option<String>> {
        // A schema's name has at most 63 bytes: the experiment's part is cut to fit.
        let room = 63usize.saturating_sub(tag.len() + 1);
        let mut head = self.schema.clone();
        while head.len() > room {
            head.pop();
        }
        let to = format!("{head}.{tag}");
        let from = self.schema.clone();
        // Under the experiment's lock, so that no transaction of a worker joining right now
        // runs in the schema while it is renamed.
        let lock = self.lock_sql();
        self.conn()?.batch_execute(&format!(
            "BEGIN; {lock}; ALTER SCHEMA {} RENAME TO {}; COMMIT",
            ident(&from),
            ident(&to)
        ))?;
        Ok(Some(to))
    }

    fn transaction(&mut self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        self.run_tx(true, &mut |tx| f(tx))
    }
}

impl PgStore {
    /// Make a new store of the experiment `experiment` in the database of `url` from a
    /// dump (`optx backup` into a server database): refused if the experiment is there.
    pub fn restore(url: &str, experiment: &str, dump: &Dump) -> Result<()> {
        let shown = crate::domain::redact_url(url);
        let mut probe = PgStore::open(url, Some(experiment), Mode::Read).err();
        match probe.take() {
            None => {
                return Err(StoreError::Unusable(format!(
                    "{shown} holds the experiment `{experiment}` already: give another database, or name another experiment (?experiment=NAME)"
                )))
            }
            Some(StoreError::Unusable(m)) if m.starts_with("there is no store") => {}
            Some(e) => return Err(e),
        }
        let s = PgStore::open(url, Some(experiment), Mode::Restore)?;
        let mut c = s.client.take().ok_or_else(|| StoreError::Other("no connection".into()))?;
        // The schema and its rows in one transaction: a copy that fails leaves nothing.
        let mut t = c.transaction()?;
        if !s.create_in(&mut t)? {
            return Err(StoreError::Unusable(format!("{shown} holds the experiment `{experiment}` already")));
        }
        Self::fill(&s, &mut t, dump)?;
        t.commit()?;
        Ok(())
    }

    /// The rows of `dump`, into the new experiment's tables, in one transaction.
    fn fill(s: &PgStore, t: &mut postgres::Transaction, dump: &Dump) -> Result<()> {
        t.batch_execute(&s.lock_sql())?;
        t.execute("UPDATE optx_meta SET uuid = $1, created_at = $2 WHERE id = 1", &[&dump.uuid, &dump.created_at])?;
        for (table, rows) in &dump.tables {
            let Some((_, _, cols)) = TABLES.iter().find(|(n, _, _)| n == table) else { continue };
            let mut names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let with_id = table == "observations";
            if with_id {
                names.push("id");
            }
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let sql = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), marks.join(", "));
            let st = t.prepare(&sql)?;
            for (n, row) in rows.iter().enumerate() {
                let mut ps: Vec<V> = row
                    .iter()
                    .zip(cols.iter())
                    .map(|(cell, (_, kind))| match (cell, kind) {
                        (Cell::Null, super::Kind::Int) => V::I(None),
                        (Cell::Null, super::Kind::Bool) => V::B(None),
                        (Cell::Null, super::Kind::Real) => V::F(None),
                        (Cell::Null, super::Kind::Text) => V::T(None),
                        (Cell::Int(i), super::Kind::Bool) => V::B(Some(*i != 0)),
                        (Cell::Int(i), super::Kind::Real) => V::F(Some(*i as f64)),
                        (Cell::Int(i), _) => V::I(Some(*i)),
                        (Cell::Real(x), _) => V::F(Some(*x)),
                        (Cell::Text(s), _) => V::T(Some(s.clone())),
                    })
                    .collect();
                if with_id {
                    ps.push(V::I(Some(n as i64 + 1)));
                }
                t.execute(&st, &refs(&ps))?;
            }
        }
        Ok(())
    }
}

impl Tx for PgTx<'_> {
    fn time(&self) -> &str {
        &self.time
    }

    fn insert_trial(&mut self, n: &NewTrial) -> Result<()> {
        let status = TrialStatus::Candidate;
        // The row and its event in one statement: one round trip under the lock.
        self.exec(
            &sql::insert_trial(),
            p![
                n.index,
                status.as_str(),
                status.code(),
                n.arm_key,
                n.parameters.to_string(),
                n.generation,
                n.rerun_of,
                n.attempt as i64,
                n.session,
                self.time.clone(),
                self.worker
            ],
        )?;
        Ok(())
    }

    fn transition(&mut self, index: u64, from: TrialStatus, to: TrialStatus, data: &TransitionData) -> Result<()> {
        from.transition(to).map_err(|error| StoreError::Transition { trial: index, error })?;
        let time_col = match to {
            TrialStatus::Staged => "staged_at",
            TrialStatus::Running => "started_at",
            _ => "completed_at",
        };
        let sql = sql::transition(time_col);
        let msg = match data.reason {
            Some(r) => format!("{from} -> {to}: {r}"),
            None => format!("{from} -> {to}"),
        };
        let changed = self.exec(
            &sql,
            p![
                to.as_str(),
                to.code(),
                self.time.clone(),
                data.reason,
                data.lost,
                data.feasible,
                data.run_metadata.map(|v| v.to_string()),
                data.stop_metadata.map(|v| v.to_string()),
                data.slot.map(|s| s as i64),
                data.trial_dir,
                index,
                from.as_str(),
                self.worker,
                msg,
            ],
        )?;
        if changed != 1 {
            return Err(StoreError::Other(format!(
                "trial {index} is not {from} in the store: refusing {from} -> {to}"
            )));
        }
        Ok(())
    }

    fn set_run_metadata(&mut self, index: u64, meta: &serde_json::Value) -> Result<()> {
        self.exec("UPDATE trials SET run_metadata = $1 WHERE idx = $2", p![meta.to_string(), index])?;
        Ok(())
    }

    fn hold(&mut self, index: u64, worker: Option<i64>) -> Result<()> {
        self.exec(&sql::hold(), p![worker, index, self.time.clone(), self.worker])?;
        Ok(())
    }

    fn claim(&mut self, index: u64, seen: Option<i64>, me: i64) -> Result<bool> {
        let n =
            self.exec(&sql::claim(), p![me, index, seen, self.time.clone(), self.worker, format!("by worker #{me}")])?;
        Ok(n == 1)
    }

    fn open_trials(&mut self) -> Result<Vec<Trial>> {
        Ok(self.query(&sql::open_trials(), vec![])?.iter().map(trial_row).collect())
    }

    fn next_index(&mut self) -> Result<u64> {
        Ok(self.query(sql::NEXT_INDEX, vec![])?[0].get::<_, i64>(0) as u64)
    }

    fn open_workers(&mut self) -> Result<Vec<i64>> {
        Ok(self
            .query("SELECT id FROM sessions WHERE ended_at IS NULL AND taken_over IS NULL ORDER BY id", vec![])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn take_over(&mut self, dead: i64, alive: &dyn Fn(&Worker) -> bool) -> Result<bool> {
        let sql =
            format!("SELECT {WORKER_COLUMNS} FROM sessions WHERE id = $1 AND taken_over IS NULL AND ended_at IS NULL");
        // Just after a break of the connection, the others are connecting again too: their
        // leases may look run out for a moment.
        if self.store.reconnected.get().is_some_and(|t| t.elapsed() < RECONNECT_GRACE) {
            return Ok(false);
        }
        let offset = self.store.offset.get();
        let Some(w) = self.query(&sql, p![dead])?.first().map(|r| worker_row(r, offset)) else { return Ok(false) };
        if alive(&w) {
            return Ok(false);
        }
        let t = self.time.clone();
        let n = self.exec(
            "UPDATE sessions SET taken_over = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL",
            p![t, dead],
        )?;
        Ok(n == 1)
    }

    fn observation(&mut self, o: &Observation) -> Result<()> {
        self.defer(
            "INSERT INTO observations (id, trial, metric, progression, mean, sem, final, time)
             VALUES ((SELECT coalesce(max(id), 0) + 1 FROM observations), $1, $2, $3, $4, $5, $6, $7)",
            p![o.trial, o.metric.clone(), o.progression, o.mean, o.sem, o.is_final, self.time.clone()],
        );
        Ok(())
    }

    fn set_generator_state(&mut self, key: &str, value: &serde_json::Value) -> Result<()> {
        self.defer(
            "INSERT INTO generator_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            p![key, value.to_string()],
        );
        Ok(())
    }

    fn event(&mut self, trial: Option<u64>, kind: &str, message: Option<&str>) -> Result<()> {
        self.defer(
            "INSERT INTO events (id, time, session, trial, kind, message)
             VALUES ((SELECT coalesce(max(id), 0) + 1 FROM events), $1, $2, $3, $4, $5)",
            p![self.time.clone(), self.worker, trial, kind, message],
        );
        Ok(())
    }

    fn changes(&mut self, after: i64, me: i64) -> Result<Changes> {
        let r = self.query(sql::CHANGES, p![after, me])?;
        let (cursor, others): (i64, i64) = (r[0].get(0), r[0].get(1));
        if others == 0 {
            return Ok(Changes { cursor, ..Default::default() });
        }
        let trials = self.query(&sql::changed_trials(), p![after, cursor, me])?.iter().map(trial_row).collect();
        let finals = self.query(&sql::changed_finals(), p![after, cursor, me])?.iter().map(observation_row).collect();
        Ok(Changes { cursor, trials, finals })
    }

    fn trial(&mut self, index: u64) -> Result<Option<Trial>> {
        Ok(self.query(&sql::trial(), p![index])?.first().map(trial_row))
    }

    fn generator_state(&mut self, key: &str) -> Result<Option<serde_json::Value>> {
        let rows = self.query(sql::GENERATOR_STATE, p![key])?;
        match rows.first() {
            Some(r) => Ok(Some(serde_json::from_str(&r.get::<_, String>(0))?)),
            None => Ok(None),
        }
    }
}

/// The statements of a worker's transactions: prepared when it connects, outside the
/// lock, so that its first transactions under it pay no parse.
mod sql {
    use super::{event_of, TRIAL_COLUMNS};

    pub const NEXT_INDEX: &str = "SELECT coalesce(max(idx) + 1, 0) FROM trials";
    pub const CHANGES: &str =
        "SELECT coalesce(max(id), $1), count(*) FILTER (WHERE trial IS NOT NULL AND (session IS NULL OR session != $2))
         FROM events WHERE id > $1";
    pub const GENERATOR_STATE: &str = "SELECT value FROM generator_state WHERE key = $1";
    const CHANGED: &str = "SELECT DISTINCT trial FROM events WHERE id > $1 AND id <= $2 AND trial IS NOT NULL
                           AND (session IS NULL OR session != $3)";

    /// A trial's row and its event in one statement: one round trip under the lock.
    pub fn insert_trial() -> String {
        format!(
            "WITH t AS (INSERT INTO trials (idx, status, status_code, arm_key, parameters, generation, rerun_of, attempt, session, holder, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING idx) {}",
            event_of("t", "$10", "$11", "'created'", "$6")
        )
    }

    /// The update and its event in one statement (the event only if the update was made).
    pub fn transition(time_col: &str) -> String {
        format!(
            "WITH u AS (UPDATE trials SET status = $1, status_code = $2, {time_col} = $3,
                reason = coalesce($4, reason), lost = $5 OR lost, feasible = coalesce($6, feasible),
                run_metadata = coalesce($7, run_metadata), stop_metadata = coalesce($8, stop_metadata),
                slot = coalesce($9, slot), trial_dir = coalesce($10, trial_dir)
             WHERE idx = $11 AND status = $12 RETURNING idx) {}",
            event_of("u", "$3", "$13", "'transition'", "$14")
        )
    }

    pub fn hold() -> String {
        format!(
            "WITH u AS (UPDATE trials SET holder = $1 WHERE idx = $2 RETURNING idx) {}",
            event_of("u", "$3", "$4", "'held'", "NULL")
        )
    }

    pub fn claim() -> String {
        format!(
            "WITH u AS (UPDATE trials SET holder = $1 WHERE idx = $2 AND holder IS NOT DISTINCT FROM $3 RETURNING idx) {}",
            event_of("u", "$4", "$5", "'held'", "$6")
        )
    }

    pub fn open_trials() -> String {
        format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE status IN ('CANDIDATE', 'STAGED', 'RUNNING') ORDER BY idx")
    }

    pub fn trial() -> String {
        format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE idx = $1")
    }

    pub fn changed_trials() -> String {
        format!("SELECT {TRIAL_COLUMNS} FROM trials WHERE idx IN ({CHANGED}) ORDER BY idx")
    }

    pub fn changed_finals() -> String {
        format!(
            "SELECT o.trial, o.metric, o.progression, o.mean, o.sem, o.final FROM observations o
             JOIN trials t ON t.idx = o.trial
             WHERE o.final AND t.status NOT IN ('CANDIDATE', 'STAGED', 'RUNNING') AND o.trial IN ({CHANGED})
             ORDER BY o.trial, o.id"
        )
    }

    /// Every statement above.
    pub fn all() -> Vec<String> {
        let mut v: Vec<String> = [NEXT_INDEX, CHANGES, GENERATOR_STATE].iter().map(|s| s.to_string()).collect();
        v.extend([insert_trial(), hold(), claim(), open_trials(), trial(), changed_trials(), changed_finals()]);
        v.extend(["staged_at", "started_at", "completed_at"].map(transition));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LedgerExt;

    fn url() -> String {
        std::env::var("OPTX_TEST_PG_URL").expect(
            "OPTX_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server for them",
        )
    }

    fn trial<'a>(index: u64, p: &'a serde_json::Value, key: &'a str) -> NewTrial<'a> {
        NewTrial { index, arm_key: key, parameters: p, generation: "sobol", rerun_of: None, attempt: 1, session: 1 }
    }

    /// Cut this transaction's connection from the server's side (as a restart does).
    fn cut(tx: &mut PgTx) {
        let pid: i32 = tx.query("SELECT pg_backend_pid()", vec![]).unwrap()[0].get(0);
        let mut admin = Client::connect(&url(), NoTls).unwrap();
        admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    }

    #[test]
    fn a_transaction_cut_off_runs_again_on_a_new_connection_when_nobody_wrote_since() {
        let name = format!("t_cut_{}", std::process::id());
        let mut s = PgStore::open(&url(), Some(&name), Mode::Create).unwrap();
        let p = serde_json::json!({"x": 1});
        let o = Observation { trial: 0, metric: "f".into(), progression: None, mean: 0.1, sem: None, is_final: true };
        s.run_tx(true, &mut |tx| {
            tx.insert_trial(&trial(0, &p, "a"))?;
            // A deferred write, sent before the read that follows it.
            tx.observation(&o)?;
            assert!(tx.trial(0)?.is_some());
            cut(tx);
            // The next statement finds the connection gone: what ran is run again first.
            tx.insert_trial(&trial(1, &p, "b"))?;
            tx.observation(&Observation { trial: 1, ..o.clone() })
        })
        .unwrap();
        let t = s.trials().unwrap();
        assert_eq!(t.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0, 1]);
        let obs = s.observations().unwrap();
        assert_eq!(obs.iter().map(|o| (o.trial, o.mean)).collect::<Vec<_>>(), vec![(0, 0.1), (1, 0.1)]);
        // Each trial once, and its event once.
        let events: i64 = s.read("SELECT count(*) FROM events WHERE kind = 'created'", vec![]).unwrap()[0].get(0);
        assert_eq!(events, 2);
    }

    #[test]
    fn a_transaction_cut_off_after_another_worker_wrote_is_refused_and_leaves_nothing() {
        let name = format!("t_cut_other_{}", std::process::id());
        let mut s = PgStore::open(&url(), Some(&name), Mode::Create).unwrap();
        let mut other = PgStore::open(&url(), Some(&name), Mode::Existing).unwrap();
        let p = serde_json::json!({"x": 1});
        let r = s.run_tx(true, &mut |tx| {
            tx.insert_trial(&trial(0, &p, "a"))?;
            cut(tx);
            // Our lock went with the connection: another worker commits meanwhile.
            other.tx(|t| t.insert_trial(&trial(5, &p, "z"))).unwrap();
            tx.insert_trial(&trial(1, &p, "b"))
        });
        let e = r.unwrap_err();
        assert!(e.to_string().contains("other workers wrote since"), "{e}");
        assert_eq!(s.trials().unwrap().iter().map(|t| t.index).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn leases_are_kept_in_the_servers_time_so_hosts_whose_clocks_differ_agree() {
        let name = format!("t_clock_{}", std::process::id());
        // A's clock is 100 s behind the server's; B's is the server's.
        let mut a = PgStore::open(&url(), Some(&name), Mode::Create).unwrap();
        a.offset.set(100.0);
        let b = PgStore::open(&url(), Some(&name), Mode::Existing).unwrap();
        let me = NewWorker { command: "optx run", pid: 1, process_start: None, host: "a", lease_seconds: 60.0 };
        let w = a.join(&me, false, &|_| true).unwrap();
        a.renew(w).unwrap();
        let now = std::time::SystemTime::now();
        // Each judges A's lease on its own clock, and both find it running.
        assert!(b.workers().unwrap()[0].lease_runs(now), "{:?}", b.workers());
        let a_now = now.checked_sub(Duration::from_secs(100)).unwrap();
        assert!(a.workers().unwrap()[0].lease_runs(a_now), "{:?}", a.workers());
        assert_eq!(shift("2026-12-01T00:00:00.000Z", -1.5), "2026-11-30T23:59:58.500Z");
    }

    #[test]
    fn values_written_into_a_statement_are_quoted_once() {
        let sql = inline(
            "INSERT INTO t VALUES ($1, $2, $10, $3, $4)",
            &[
                V::from("it's $1"),
                V::from(0.1f64),
                V::from(None::<i64>),
                V::from(true),
                V::from(5i64),
                V::from(6i64),
                V::from(7i64),
                V::from(8i64),
                V::from(9i64),
                V::from("ten"),
            ],
        );
        assert_eq!(sql, "INSERT INTO t VALUES ('it''s $1', '0.1'::float8, 'ten', NULL, true)");
        assert_eq!(literal(&V::F(Some(f64::NAN))), "'NaN'::float8");
        assert_eq!(literal(&V::F(Some(1e-300))), "'1e-300'::float8");
    }

    #[test]
    fn a_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\nother:5432:*:ann:no\ndb\\:1:*:lab:ann:pa\\:ss\n*:*:*:*:any\n";
        assert_eq!(pgpass_lookup(text, "db:1", 5432, "lab", "ann").as_deref(), Some("pa:ss"));
        assert_eq!(pgpass_lookup(text, "h", 1, "d", "u").as_deref(), Some("any"));
        assert_eq!(pgpass_lookup("h:5432:d:u:x\n", "h", 5433, "d", "u"), None);
    }
}
