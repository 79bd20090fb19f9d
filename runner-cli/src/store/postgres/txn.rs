//! A writer's transaction: under the experiment's lock, its statements logged so that a
//! broken connection replays them, its deferred writes sent with the commit.

use super::*;

impl PgStore {
    /// One transaction under the experiment's lock, replayed on a new connection if the old
    /// one broke before the commit was known (see the module's documentation).
    pub(super) fn run_tx(&mut self, fenced: bool, f: &mut dyn FnMut(&mut PgTx) -> Result<()>) -> Result<()> {
        let token = crate::store::new_uuid();
        let asked = Instant::now();
        // The fence (a worker taken over writes nothing more), and the renewal of its lease
        // when a sixth of it passed, go with the lock: no round trip of their own.
        let fence = if fenced { self.fence } else { None };
        let renew = match (fence, self.renewed) {
            (Some(_), Some((at, every))) if at.elapsed() >= every => Some(self.server_now()),
            _ => None,
        };
        let lock = self.lock_sql().to_string();
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
        // Trials' times are this host's, as the scheduler reads them (a timeout is judged
        // here); only a worker's lease is kept in the server's time.
        let time = now();
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
    pub(super) fn replay(
        &self,
        seq: i64,
        fence: Option<i64>,
        token: &str,
        log: &[Stmt],
        deferred: &[String],
    ) -> std::result::Result<(), Replay> {
        let mut c = self.conn().map_err(Replay::Stop)?;
        match rerun(&mut c, self.lock_sql(), seq, fence, Some(token), log) {
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
pub(super) fn prepared(
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
pub(super) enum Replay {
    Broken,
    Gone,
    Stop(StoreError),
}

/// What a replay found under the lock.
pub(super) enum Rerun {
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
pub(super) fn rerun(
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
pub(super) fn commit(
    c: &mut Client,
    seq: i64,
    token: &str,
    deferred: &[String],
) -> std::result::Result<(), postgres::Error> {
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
pub(super) fn begin(
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

/// A statement of a transaction as it ran: replayed after a broken connection.
pub(super) struct Stmt {
    sql: String,
    params: Vec<V>,
    /// The rows a write changed (none for a read).
    rows: Option<u64>,
    /// Several statements with their values written in (the deferred writes).
    batch: bool,
}

/// A write transaction of the server store.
pub struct PgTx<'s> {
    pub(super) store: &'s mut PgStore,
    pub(super) seq: i64,
    pub(super) fence: Option<i64>,
    pub(super) time: String,
    pub(super) log: Vec<Stmt>,
    /// Writes whose answer nothing needs (observations, the generator's state, events):
    /// sent with the commit, in one round trip, or before the next statement that reads.
    pub(super) deferred: Vec<String>,
    pub(super) worker: Option<i64>,
    /// Time spent waiting for the server's answers (for the workers benchmark).
    pub(super) in_db: Duration,
}

impl PgTx<'_> {
    /// Run a statement of this transaction; on a broken connection, replay what ran so far
    /// on a new one (if nothing else committed since) and go on.
    pub(super) fn run<T>(
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

    pub(super) fn exec(&mut self, sql: &str, ps: Vec<V>) -> Result<u64> {
        self.run(sql, ps, true, |c, s, p| c.execute(s, p), |n| *n)
    }

    pub(super) fn query(&mut self, sql: &str, ps: Vec<V>) -> Result<Vec<Row>> {
        self.run(sql, ps, false, |c, s, p| c.query(s, p), |_| 0)
    }

    /// A write sent with the commit (or before the next statement).
    pub(super) fn defer(&mut self, sql: &str, ps: Vec<V>) {
        self.deferred.push(inline(sql, &ps));
    }

    /// Send the deferred writes now, as one statement of this transaction (it is then
    /// replayed with the others if the connection breaks).
    pub(super) fn flush(&mut self) -> Result<()> {
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
    pub(super) fn recover(&mut self) -> Result<()> {
        *self.store.client.get_mut() = None;
        loop {
            let mut c = self.store.conn()?;
            // No token: the commit was not sent yet.
            match rerun(&mut c, self.store.lock_sql(), self.seq, self.fence, None, &self.log) {
                Ok(_) => return Ok(()),
                Err(Replay::Broken | Replay::Gone) => {
                    drop(c);
                    *self.store.client.get_mut() = None;
                }
                Err(Replay::Stop(e)) => {
                    let _ = c.batch_execute("ROLLBACK");
                    drop(c);
                    // No transaction is open on it any more: nothing may run there as if.
                    *self.store.client.get_mut() = None;
                    return Err(e);
                }
            }
        }
    }
}
