//! The ledger on a real PostgreSQL server (`OPTX_TEST_PG_URL`, started by scripts/test.sh):
//! workers sharing it, one killed, the server restarted under them, bad URLs, and copies
//! between the two kinds of store.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::common::*;

const X: &str = r#"x = { type = "float", bounds = [0.0, 1.0] }"#;

fn server_url() -> String {
    std::env::var("OPTX_TEST_PG_URL").expect(
        "OPTX_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server for them",
    )
}

/// An experiment name of its own on the shared server.
fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{name}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// An experiment on a server database.
struct OnServer {
    e: Exp,
    url: String,
}

impl OnServer {
    fn new(name: &str, url: &str, runner: &str, orch: &str) -> OnServer {
        let text =
            toml(name, X, runner, orch, &format!("[generation]\nmethod = \"sobol\"\n\n[storage]\nurl = \"{url}\""));
        OnServer { e: Exp::new(name, &text), url: url.to_string() }
    }

    /// The store's URL, naming the experiment.
    fn store(&self) -> String {
        format!("{}?experiment={}", self.url, self.e.name)
    }

    fn client(&self) -> postgres::Client {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test server");
        c.batch_execute(&format!("SET search_path TO \"{}\"", self.e.name)).unwrap();
        c
    }

    fn count(&self, sql: &str) -> i64 {
        match postgres::Client::connect(&self.url, postgres::NoTls) {
            Ok(mut c) => {
                let _ = c.batch_execute(&format!("SET search_path TO \"{}\"", self.e.name));
                c.query_one(sql, &[]).map(|r| r.get(0)).unwrap_or(0)
            }
            Err(_) => 0,
        }
    }

    fn trials(&self) -> Vec<serde_json::Value> {
        let out = self.e.optx(&["trials", &self.store(), "--format", "json"]);
        assert!(out.status.success(), "optx trials failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("trials json")
    }

    fn wait_for(&self, secs: u64, what: &str, mut cond: impl FnMut(&OnServer) -> bool) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !cond(self) {
            assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A script that logs each execution of a trial, so that a test can count them.
fn logged_runner(log: &Path, sleep: &str) -> String {
    format!("command = [\"sh\", \"-c\", \"echo {{trial}} $PPID >> {}; sleep {sleep}; echo f={{x}}\"]", log.display())
}

/// Exactly `n` arms completed, none twice, each trial executed once.
fn check_exact(s: &OnServer, n: usize, log: &Path) {
    assert_exact_and_once(&s.trials(), n, log);
}

#[test]
fn three_workers_share_a_server_store_and_a_killed_one_is_taken_over() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let orch = "max_trials = 40\nparallelism = 1\ninitial_seconds_between_polls = 0.05\nworker_lease_seconds = 3";
    let s = OnServer::new(&unique("three"), &server_url(), &logged_runner(log.path(), "0.3"), orch);
    let mut workers: Vec<(usize, Spawned)> =
        (0..3).map(|i| (i, s.e.spawn(&["run", "experiment.toml", "--join"], &format!("w{i}")))).collect();
    s.wait_for(60, "8 completed trials", |s| s.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 8);
    let (_, mut victim) = workers.remove(1);
    let victim_pid = victim.id();
    s.wait_for(30, "the victim to run a trial", |s| {
        s.count(&format!(
            "SELECT count(*) FROM trials t JOIN sessions s ON s.id = t.holder WHERE s.pid = {victim_pid} AND t.status = 'RUNNING'"
        )) == 1
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (i, w) in workers.iter_mut() {
        let st = w.wait().unwrap();
        assert_eq!(st.code(), Some(0), "worker {i}: {}", s.e.log(&format!("w{i}")));
    }
    check_exact(&s, 40, log.path());
    let creators: HashSet<i64> = s.trials().iter().filter_map(|t| t["worker"].as_i64()).collect();
    assert!(creators.len() >= 2, "the work was shared: {creators:?}");
    let taken = s.count(&format!("SELECT count(*) FROM sessions WHERE pid = {victim_pid} AND taken_over IS NOT NULL"));
    assert_eq!(taken, 1, "the dead worker was taken over");
    let adopted =
        [0, 2].iter().any(|i| s.e.log(&format!("w{i}")).contains("taking over 1 trial(s) that nobody follows"));
    assert!(adopted, "its running trial was taken over");
    // The password is in no stored row, no status and no log line.
    let password = ":optx@";
    let status = s.e.run_ok(&["status", &s.store()]);
    assert!(!text(&status).contains(password), "{}", text(&status));
    assert!(text(&status).contains(":***@"), "{}", text(&status));
    let stored: i64 = s
        .client()
        .query_one(&format!("SELECT count(*) FROM sessions WHERE command LIKE '%{password}%'"), &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    for i in [0, 2] {
        assert!(!s.e.log(&format!("w{i}")).contains(password));
    }
}

/// A server of its own (the test restarts it): its directory and URL.
struct OwnServer {
    dir: tempfile::TempDir,
    url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-server.sh")
}

impl OwnServer {
    fn start() -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("bash").arg(script()).arg("start").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "pg-server.sh start: {}", text(&out));
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        OwnServer { dir, url }
    }

    fn restart(&self) {
        let out =
            std::process::Command::new("bash").arg(script()).arg("restart").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "pg-server.sh restart: {}", text(&out));
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output();
    }
}

#[test]
fn workers_reconnect_when_the_server_restarts_and_the_run_completes_exactly() {
    let server = OwnServer::start();
    let log = tempfile::NamedTempFile::new().unwrap();
    let orch = "max_trials = 30\nparallelism = 2\ninitial_seconds_between_polls = 0.05\nworker_lease_seconds = 20";
    let s = OnServer::new("restarts", &server.url, &logged_runner(log.path(), "0.3"), orch);
    let mut workers: Vec<Spawned> =
        (0..3).map(|i| s.e.spawn(&["run", "experiment.toml", "--join"], &format!("w{i}"))).collect();
    s.wait_for(60, "8 completed trials", |s| s.count("SELECT count(*) FROM trials WHERE status = 'COMPLETED'") >= 8);
    // As a crash of the server: every connection is cut at once.
    server.restart();
    let codes: Vec<Option<i32>> = workers.iter_mut().map(|w| w.wait().unwrap().code()).collect();
    let logs: Vec<String> = (0..3).map(|i| s.e.log(&format!("w{i}"))).collect();
    eprintln!("the workers' exit codes after the restart: {codes:?}");
    assert!(logs.iter().any(|l| l.contains("connected to") && l.contains("again")), "{logs:?}");
    for (c, l) in codes.iter().zip(&logs) {
        // A worker cut off inside a transaction that others overtook stops (exit 1) and
        // its trials are taken over; every other worker goes on to the end.
        let stopped =
            *c == Some(1) && (l.contains("other workers wrote since") || l.contains("did not change what it had"));
        assert!(*c == Some(0) || stopped, "{c:?}: {l}");
    }
    assert!(codes.contains(&Some(0)));
    // What a stopped worker left is settled by a resume (nothing here when all went on).
    if codes.iter().any(|c| *c != Some(0)) {
        s.e.run_ok(&["resume", &s.store()]);
    }
    check_exact(&s, 30, log.path());
}

#[test]
fn a_bad_url_a_wrong_password_or_a_closed_port_is_exit_2_and_writes_nothing() {
    let url = server_url();
    let (userinfo, rest) = url.split_once('@').unwrap();
    let (scheme_user, _) = userinfo.rsplit_once(':').unwrap();
    let hostport = rest.split('/').next().unwrap();
    let name = unique("badurl");
    let cases = [
        (format!("{scheme_user}:wrong@{rest}"), "password authentication failed"),
        (format!("{userinfo}@{hostport}/no_such_db"), "database \"no_such_db\" does not exist"),
        (format!("{userinfo}@127.0.0.1:1/optx"), "Connection refused"),
        (format!("{scheme_user}@{rest}"), "password missing (give it in the URL, in PGPASSWORD or in ~/.pgpass)"),
        ("postgresql://[bad".to_string(), "is not a usable PostgreSQL URL"),
    ];
    for (bad, why) in &cases {
        let e = Exp::new(&name, &toml(&name, X, "command = [\"sh\", \"-c\", \"echo f=1\"]", "max_trials = 1", ""));
        for args in [vec!["run", "experiment.toml", "--store", bad], vec!["status", bad]] {
            let out = e.optx(&args);
            assert_eq!(code(&out), 2, "{bad}: {}", text(&out));
            assert!(text(&out).contains(why), "{bad}: {}", text(&out));
            assert!(!text(&out).contains(":wrong@") && !text(&out).contains(":optx@"), "{}", text(&out));
        }
        assert!(!e.path().join(".optx").exists(), "nothing written beside the experiment");
    }
    // The password can come from PGPASSWORD (and ~/.pgpass) instead of the URL.
    let e = Exp::new(&name, &toml(&name, X, "command = [\"sh\", \"-c\", \"echo f={x}\"]", "max_trials = 2", ""));
    let password = userinfo.rsplit_once(':').unwrap().1;
    let no_password = format!("{scheme_user}@{rest}");
    let mut c = e.cmd(&["run", "experiment.toml", "--store", &no_password, "-q"]);
    c.env("PGPASSWORD", password);
    let out = output_within(c, std::time::Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    std::fs::write(&pgpass, format!("*:*:*:*:{password}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut c = e.cmd(&["status", &format!("{no_password}?experiment={name}")]);
    c.env("HOME", home.path()).env_remove("PGPASSWORD");
    let out = output_within(c, std::time::Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("2 of 2 trials"), "{}", text(&out));
}

#[test]
fn a_backup_from_a_file_to_the_server_and_back_reads_the_same() {
    let name = unique("roundtrip");
    let e = Exp::new(
        &name,
        &toml(&name, X, "command = [\"sh\", \"-c\", \"echo f={x}\"]", "max_trials = 6\nparallelism = 2", ""),
    );
    e.run_ok(&["run", "experiment.toml", "-q"]);
    let url = format!("{}?experiment={name}", server_url());
    let out = e.run_ok(&["backup", &format!(".optx/{name}.db"), &url]);
    assert!(text(&out).contains("(6 trials)"), "{}", text(&out));
    e.run_ok(&["backup", &url, "back.db"]);
    let json = |store: &str| {
        let out = e.run_ok(&["trials", store, "--format", "json"]);
        String::from_utf8(out.stdout).unwrap()
    };
    let original = json(&format!(".optx/{name}.db"));
    assert_eq!(json(&url), original);
    assert_eq!(json("back.db"), original);
    // A copy never overwrites: the experiment is on the server already.
    let again = e.optx(&["backup", &format!(".optx/{name}.db"), &url]);
    assert_eq!(code(&again), 2, "{}", text(&again));
    // The experiment goes on from the server store: a resume with a higher budget.
    e.run_ok(&["resume", &url, "--max-trials", "8", "-q"]);
    assert_eq!(json(&url).matches("\"COMPLETED\"").count(), 8);
    // The server store keeps trial dirs of its own: the local store's are left as they are.
    let local = e.path().join(".optx").join(format!("{name}.trials"));
    assert!(local.join("0").is_dir(), "the local store's trial dirs are still there");
    let set_aside: Vec<_> = std::fs::read_dir(e.path().join(".optx"))
        .unwrap()
        .filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().contains(".old-"))
        .collect();
    assert!(set_aside.is_empty(), "nothing set aside: {set_aside:?}");
    assert!(e.path().join(".optx").join(format!("{name}.server.trials")).is_dir());
    // From the file, a URL without `?experiment=` names the file's experiment (the server
    // holds many).
    e.run_ok(&["resume", "experiment.toml", "--store", &server_url(), "--max-trials", "9", "-q"]);
    assert_eq!(json(&url).matches("\"COMPLETED\"").count(), 9);
    // `--fresh` on a server store keeps the old one, under a new schema name.
    let fresh = e.run_ok(&["run", "experiment.toml", "--store", &url, "--fresh", "-q"]);
    let _ = fresh;
    let kept: i64 = postgres::Client::connect(&server_url(), postgres::NoTls)
        .unwrap()
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE $1",
            &[&format!("{name}.bak-%")],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}
