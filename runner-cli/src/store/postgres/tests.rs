//! The server store's own tests (the shared ones are in `store/suite.rs`).

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
fn a_lease_is_kept_in_the_servers_time_and_judged_on_each_hosts_own_clock() {
    let name = format!("t_clock_{}", std::process::id());
    // This host's clock as 100 s behind the server's (for both stores: one host).
    let mut a = PgStore::open(&url(), Some(&name), Mode::Create).unwrap();
    a.offset.set(100.0);
    let b = PgStore::open(&url(), Some(&name), Mode::Existing).unwrap();
    b.offset.set(100.0);
    let me = NewWorker { command: "optx run", pid: 1, process_start: None, host: "a", lease_seconds: 60.0 };
    let w = a.join(&me, false, &|_| true).unwrap();
    a.renew(w).unwrap();
    let now = std::time::SystemTime::now();
    let apart = |t: &str| {
        let t = crate::store::parse_time(t).unwrap();
        t.duration_since(now).unwrap_or_else(|e| e.duration())
    };
    // Stored in the server's time: 100 s ahead of this host's.
    let raw: String = b.read("SELECT renewed_at FROM sessions WHERE id = $1", p![w]).unwrap()[0].get(0);
    let ahead = crate::store::parse_time(&raw).unwrap().duration_since(now).unwrap();
    assert!(ahead > Duration::from_secs(95) && ahead < Duration::from_secs(105), "{raw}");
    // Read back on this host's clock: renewed just now, the lease runs (it would look 100 s
    // in the future, or on a host 100 s ahead of this one, stale, without the shift).
    for store in [&a, &b] {
        let w = store.workers().unwrap().remove(0);
        assert!(w.lease_runs(now), "{w:?}");
        assert!(apart(w.renewed_at.as_deref().unwrap()) < Duration::from_secs(5), "{w:?}");
    }
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
