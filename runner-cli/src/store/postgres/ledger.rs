//! The ledger's verbs on the server store (`Ledger`), and a copy into a new schema.

use super::*;

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
            // A worker's own times are the server's (leases are judged across hosts).
            let time = tx.store.server_now();
            let offset = tx.store.offset.get();
            for (r, w) in rows.iter().map(|r| (r, worker_row(r, offset))) {
                if !alive(&w) {
                    // Unless it renewed since it was read (a renewal takes no lock).
                    let seen: Option<String> = r.get(6);
                    tx.exec(
                        "UPDATE sessions SET taken_over = $1 WHERE id = $2 AND taken_over IS NULL AND ended_at IS NULL
             AND renewed_at IS NOT DISTINCT FROM $3",
                        p![time.clone(), w.id, seen],
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

    fn latest_points(&self, trials: &[u64]) -> Result<std::collections::HashMap<u64, Observation>> {
        let ids: Vec<i64> = trials.iter().map(|t| *t as i64).collect();
        let rows = self.read_with(
            &format!(
                "SELECT DISTINCT ON (trial) {OBS_COLUMNS} FROM observations
                 WHERE trial = ANY($1) AND NOT final AND progression IS NOT NULL ORDER BY trial, id DESC"
            ),
            &[&ids],
        )?;
        Ok(rows.iter().map(observation_row).map(|o| (o.trial, o)).collect())
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

    fn observation_log(&self) -> Result<Vec<(Observation, String)>> {
        Ok(self
            .read(&format!("SELECT {OBS_COLUMNS}, time FROM observations ORDER BY id"), vec![])?
            .iter()
            .map(|r| (observation_row(r), r.get::<_, String>(6)))
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
        let best = crate::store::best_of(goal, rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))));
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
        crate::store::SqliteStore::restore(dest, &self.dump()?)
    }

    fn dump(&self) -> Result<Dump> {
        // One snapshot of every table: a repeatable-read transaction that writes nothing.
        // On this store's one connection.
        let mut c = self.conn()?;
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
                        crate::store::Kind::Int => r.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int),
                        crate::store::Kind::Bool => {
                            r.get::<_, Option<bool>>(i).map_or(Cell::Null, |b| Cell::Int(b as i64))
                        }
                        crate::store::Kind::Real => r.get::<_, Option<f64>>(i).map_or(Cell::Null, Cell::Real),
                        crate::store::Kind::Text => r.get::<_, Option<String>>(i).map_or(Cell::Null, Cell::Text),
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
        let lock = self.lock_sql().to_string();
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
        t.batch_execute(s.lock_sql())?;
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
                        (Cell::Null, crate::store::Kind::Int) => V::I(None),
                        (Cell::Null, crate::store::Kind::Bool) => V::B(None),
                        (Cell::Null, crate::store::Kind::Real) => V::F(None),
                        (Cell::Null, crate::store::Kind::Text) => V::T(None),
                        (Cell::Int(i), crate::store::Kind::Bool) => V::B(Some(*i != 0)),
                        (Cell::Int(i), crate::store::Kind::Real) => V::F(Some(*i as f64)),
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
