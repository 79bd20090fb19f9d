//! A builder for experiments in temporary directories, and helpers to read their stores.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The optx binary under test.
pub fn optx_bin() -> PathBuf {
    if let Ok(p) = std::env::var("OPTX_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/e2e-<hash> -> target/debug/optx
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("optx");
    assert!(bin.is_file(), "{} is missing: run `cargo build --workspace` before the tests", bin.display());
    bin
}

/// An experiment in a temporary directory.
pub struct Exp {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// The usual sections around the parts a test cares about.
pub fn toml(name: &str, parameters: &str, runner: &str, orchestration: &str, extra: &str) -> String {
    format!(
        "[experiment]\nname = \"{name}\"\nseed = 3\n\n[parameters]\n{parameters}\n\n[objective]\nminimize = \"f\"\n\n\
         [runner]\n{runner}\n\n[orchestration]\n{orchestration}\n\n{extra}\n"
    )
}

impl Exp {
    pub fn new(name: &str, text: &str) -> Exp {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("experiment.toml"), text).expect("write toml");
        Exp { dir, name: name.to_string() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str, content: &str) -> &Self {
        std::fs::write(self.path().join(name), content).expect("write file");
        self
    }

    pub fn store(&self) -> PathBuf {
        self.path().join(".optx").join(format!("{}.db", self.name))
    }

    pub fn trial_dir(&self, index: u64) -> PathBuf {
        self.path().join(".optx").join(format!("{}.trials", self.name)).join(index.to_string())
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(optx_bin());
        c.args(args).current_dir(self.path()).stdin(Stdio::null());
        c
    }

    /// Run optx to its end (a hang fails the test after a few minutes).
    pub fn optx(&self, args: &[&str]) -> Output {
        output_within(self.cmd(args), Duration::from_secs(300))
    }

    /// Run optx to its end and require exit 0 (showing its output otherwise).
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.optx(args);
        assert_eq!(code(&out), 0, "optx {}: {}", args.join(" "), text(&out));
        out
    }

    /// Start optx in the background, its output to files in the experiment dir. It is
    /// killed if the test ends (or fails) first.
    pub fn spawn(&self, args: &[&str], log: &str) -> Spawned {
        let out = std::fs::File::create(self.path().join(format!("{log}.out"))).unwrap();
        let err = std::fs::File::create(self.path().join(format!("{log}.err"))).unwrap();
        Spawned(self.cmd(args).stdout(out).stderr(err).spawn().expect("spawn optx"))
    }

    pub fn log(&self, log: &str) -> String {
        let out = std::fs::read_to_string(self.path().join(format!("{log}.out"))).unwrap_or_default();
        let err = std::fs::read_to_string(self.path().join(format!("{log}.err"))).unwrap_or_default();
        format!("{out}{err}")
    }

    /// `optx trials --format json`, parsed.
    pub fn trials(&self) -> Vec<serde_json::Value> {
        let out = self.optx(&["trials", "experiment.toml", "--format", "json"]);
        assert!(out.status.success(), "optx trials failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("trials json")
    }

    /// A count from the store, read while optx may be writing it.
    pub fn count(&self, sql: &str) -> i64 {
        let Ok(conn) = rusqlite::Connection::open_with_flags(self.store(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return 0;
        };
        conn.busy_timeout(Duration::from_secs(5)).ok();
        conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
    }

    /// Wait until `cond` holds (checked every 20 ms), or fail after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, mut cond: impl FnMut(&Exp) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process started by a test: killed (with what it started in its process groups left
/// to the test's temp dir going away) when the test is done with it.
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            for s in children(self.0.id()) {
                signal_group(s, "KILL");
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Run `cmd` to its end, or kill it after `limit` and fail.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run optx");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn status(t: &serde_json::Value) -> &str {
    t["status"].as_str().unwrap_or("")
}

pub fn metric(t: &serde_json::Value, m: &str) -> Option<f64> {
    t["metrics"][m]["mean"].as_f64()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn signal_of(sig: &str) -> rustix::process::Signal {
    use rustix::process::Signal;
    match sig {
        "INT" => Signal::INT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        other => panic!("no signal {other} in these tests"),
    }
}

/// Send a signal (`"INT"`, `"TERM"`, `"KILL"`, `"STOP"` or `"CONT"`) to a process.
pub fn signal(pid: u32, sig: &str) {
    use rustix::process::{kill_process, Pid};
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    kill_process(pid, signal_of(sig)).unwrap_or_else(|e| panic!("kill {pid:?}: {e}"));
}

/// Send a signal to a process group, if it still exists.
pub fn signal_group(pgid: u32, sig: &str) {
    use rustix::process::{kill_process_group, Pid};
    let _ = kill_process_group(Pid::from_raw(pgid as i32).expect("a pgid"), signal_of(sig));
}

/// Stop a process and wait until it is stopped (a stop is delivered asynchronously).
pub fn freeze(pid: u32) {
    signal(pid, "STOP");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
        if state == "T" || state.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "{pid} does not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The shepherd of a running optx: its only child.
pub fn shepherd_of(optx: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = children(optx).first() {
            return *s;
        }
        assert!(Instant::now() < end, "optx {optx} has no shepherd");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The children of a process (from /proc).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if fields.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// What the shepherd recorded in a trial dir: the pid, and the exit status if it ended.
pub fn process(dir: &Path) -> (Option<u32>, Option<serde_json::Value>) {
    let text = std::fs::read_to_string(dir.join("process.jsonl")).unwrap_or_default();
    let (mut pid, mut exit) = (None, None);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(p) = v["pid"].as_u64() {
            pid = Some(p as u32);
        }
        if !v["exit"].is_null() {
            exit = Some(v["exit"].clone());
        }
    }
    (pid, exit)
}

/// Exactly `n` arms completed and none twice (`trials`: `optx trials --format json`), and
/// each trial executed once, as the script logs its executions (`{trial} ...` a line).
pub fn assert_exact_and_once(trials: &[serde_json::Value], n: usize, log: &Path) {
    let completed: Vec<&serde_json::Value> = trials.iter().filter(|t| status(t) == "COMPLETED").collect();
    assert_eq!(trials.iter().filter(|t| t["lost"] == false).count(), n, "exact budget: {trials:?}");
    assert_eq!(completed.len(), n, "{trials:?}");
    let arms: std::collections::HashSet<String> = completed.iter().map(|t| t["parameters"].to_string()).collect();
    assert_eq!(arms.len(), n, "no arm completed twice");
    let runs = std::fs::read_to_string(log).unwrap();
    let mut per_trial = std::collections::HashMap::new();
    for l in runs.lines() {
        *per_trial.entry(l.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    assert!(per_trial.values().all(|n| *n == 1), "a trial ran twice: {runs}");
}
