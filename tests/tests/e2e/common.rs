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

    /// Run optx to its end.
    pub fn optx(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run optx")
    }

    /// Run optx to its end and require exit 0 (showing its output otherwise).
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.optx(args);
        assert_eq!(code(&out), 0, "optx {}: {}", args.join(" "), text(&out));
        out
    }

    /// Start optx in the background, its output to files in the experiment dir.
    pub fn spawn(&self, args: &[&str], log: &str) -> Child {
        let out = std::fs::File::create(self.path().join(format!("{log}.out"))).unwrap();
        let err = std::fs::File::create(self.path().join(format!("{log}.err"))).unwrap();
        self.cmd(args).stdout(out).stderr(err).spawn().expect("spawn optx")
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

/// Send a signal (`"INT"`, `"TERM"` or `"KILL"`) to a process.
pub fn signal(pid: u32, sig: &str) {
    use rustix::process::{kill_process, Pid, Signal};
    let sig = match sig {
        "INT" => Signal::INT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        other => panic!("no signal {other} in these tests"),
    };
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    kill_process(pid, sig).unwrap_or_else(|e| panic!("kill {pid:?}: {e}"));
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
