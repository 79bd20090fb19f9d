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

#[macro_use]
mod params;
mod connect;
mod ledger;
mod rows;
#[cfg(test)]
mod tests;
mod tx;
mod txn;

use std::cell::{RefCell, RefMut};
use std::time::{Duration, Instant};

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row};

use super::{
    fnv1a, now, Cell, Changes, Dump, ExperimentRow, Ledger, NewTrial, NewWorker, Result, StoreError, TransitionData,
    Tx, Worker, TABLES,
};
use crate::domain::{Goal, Observation, Trial, TrialStatus};

use connect::*;
use params::*;
use rows::*;
use tx::sql;
use txn::*;

/// The schema of a server store this optx writes (its own numbering).
pub const PG_SCHEMA_VERSION: i64 = 1;

/// How long after connecting again a worker takes no other worker over.
const RECONNECT_GRACE: Duration = Duration::from_secs(15);
/// How long a broken connection is retried before the store gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);
/// How long a writer waits for the experiment's lock (another worker may hold it while it
/// computes a Bayesian proposal).
const LOCK_TIMEOUT: &str = "120s";

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
    /// The statement that takes the experiment's lock: an advisory lock on its name (the
    /// name written in, never taken from the session, so that no lookup can miss it).
    lock: String,
    writer: bool,
    /// The worker whose lease every transaction checks first.
    fence: Option<i64>,
    renewed: Option<(Instant, Duration)>,
}

/// `"name"`: a quoted identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
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
                lock: format!(
                    "SELECT pg_advisory_xact_lock(hashtext({}))",
                    literal(&V::T(Some(format!("optx:{schema}"))))
                ),
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
        self.settings(c)?;
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
        // The connection before this one, if its server process still lives (the network
        // broke, not the server): ended now, so that no transaction of it holds the lock.
        // Recorded as ended only once the new one is this store's.
        if let Some((pid, start)) = self.backend.take() {
            let ended = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                &[&pid, &start],
            );
            if let Err(e) = ended {
                // Broken again: the next attempt tries again (any other error: the old one
                // is left to the server's keepalives).
                if broken(&e) {
                    self.backend.set(Some((pid, start)));
                    return Err(StoreError::Postgres(e));
                }
            }
            self.reconnected.set(Some(Instant::now()));
        }
        self.backend.set(Some((me.get(0), me.get(1))));
        Ok(())
    }

    /// The settings of every connection to the experiment (this store's own, or a second
    /// one that reads a snapshot for a copy).
    fn settings(&self, c: &mut Client) -> Result<()> {
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

    /// The statement that takes the experiment's lock.
    fn lock_sql(&self) -> &str {
        &self.lock
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
