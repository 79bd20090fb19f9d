//! The writes of one transaction (`Tx`) on the server store, and their statements.

use super::*;

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
        let time_col = crate::store::status_time_column(to);
        let sql = sql::transition(time_col);
        let msg = crate::store::transition_message(from, to, data.reason);
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
        let rows = self.query(&sql, p![dead])?;
        let Some(row) = rows.first() else { return Ok(false) };
        let w = worker_row(row, offset);
        if alive(&w) {
            return Ok(false);
        }
        // Unless it renewed since it was read: a renewal takes no lock.
        let seen: Option<String> = row.get(6);
        let t = self.store.server_now();
        let n = self.exec(
            "UPDATE sessions SET taken_over = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL
             AND renewed_at IS NOT DISTINCT FROM $3",
            p![t, dead, seen],
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
pub(super) mod sql {
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
