//! The tables of a server store, and their rows as the domain's types.

use super::*;

pub(super) const SCHEMA: &str = r#"
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
CREATE INDEX observations_finals ON observations(trial, metric, progression, mean, sem) WHERE final;
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

/// A stored time moved by `secs` seconds (unchanged if it does not parse).
pub(super) fn shift(t: &str, secs: f64) -> String {
    let Some(at) = crate::store::parse_time(t) else { return t.to_string() };
    let d = Duration::from_secs_f64(secs.abs());
    let moved = if secs >= 0.0 { at.checked_add(d) } else { at.checked_sub(d) };
    moved.map_or_else(|| t.to_string(), |m| humantime::format_rfc3339_millis(m).to_string())
}

/// The event of the trial that the statement `cte` (a `WITH` part returning `idx`) wrote:
/// an `INSERT` that follows it, with its time, session, kind and message (SQL expressions).
pub(super) fn event_of(cte: &str, time: &str, session: &str, kind: &str, message: &str) -> String {
    format!(
        "INSERT INTO events (id, time, session, trial, kind, message)
         SELECT (SELECT coalesce(max(id), 0) + 1 FROM events), {time}, {session}::bigint, idx, {kind}, {message}::text FROM {cte}"
    )
}

pub(super) const TRIAL_COLUMNS: &str =
    "idx, status, lost, arm_key, parameters, generation, rerun_of, attempt, slot, session, feasible,
     reason, run_metadata, stop_metadata, trial_dir, created_at, staged_at, started_at, completed_at, holder";

pub(super) fn trial_row(r: &Row) -> Trial {
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

pub(super) const OBS_COLUMNS: &str = "trial, metric, progression, mean, sem, final";

pub(super) fn observation_row(r: &Row) -> Observation {
    Observation {
        trial: r.get::<_, i64>(0) as u64,
        metric: r.get(1),
        progression: r.get(2),
        mean: r.get(3),
        sem: r.get(4),
        is_final: r.get(5),
    }
}

pub(super) const WORKER_COLUMNS: &str =
    "id, command, pid, process_start, host, started_at, renewed_at, lease_seconds, ended_at, exit_code, taken_over";

/// A worker as stored, its lease's renewal moved from the server's clock (every worker
/// writes it in the server's time) to this host's, where `Worker::lease_runs` judges it.
pub(super) fn worker_row(r: &Row, offset: f64) -> Worker {
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
