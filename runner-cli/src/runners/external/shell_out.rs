//! Running the commands of a job system (submit, status, cancel): in their own process
//! group, stdin empty, stdout and stderr into files (a pipe would fill with the status of
//! ten thousand jobs), killed with their group past a timeout.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a command ended, and what it printed.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit 3" or "killed by signal 9", and the last lines of stderr.
    pub fn failure(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended abnormally".into(),
        };
        let err: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        match err.len() {
            0 => how,
            n => format!("{how}: {}", err[n.saturating_sub(3)..].join(" / ")),
        }
    }
}

/// Run `argv` in `cwd` with `env` added, its output in `out_dir/<name>.out` and `.err`.
/// `Err`: it could not start, or it ran past `timeout` (then its group was killed).
pub fn run(
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    out_dir: &Path,
    name: &str,
    timeout: Duration,
) -> Result<Ran, String> {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let (out_path, err_path) = (out_dir.join(format!("{name}.out")), out_dir.join(format!("{name}.err")));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let started = Instant::now();
    let mut wait = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() >= timeout => {
                // SAFETY: kill(2) on the process group this child leads (process_group(0)
                // above); it has not been reaped, so its id is still its own.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!("`{program}` did not finish within {}s: killed", timeout.as_secs_f64()));
            }
            Ok(None) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot wait for `{program}`: {e}")),
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Ok(Ran { code: status.code(), signal: status.signal(), stdout: read(&out_path), stderr: read(&err_path) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Result<Ran, String> {
        let dir = std::env::temp_dir().join(format!("optx-shell-out-{}", std::process::id()));
        let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
        run(&argv, &[("X".into(), "42".into())], Path::new("/"), &dir, "t", timeout)
    }

    #[test]
    fn output_exit_code_and_timeout() {
        let r = sh("echo $X; echo oops >&2; exit 3", Duration::from_secs(10)).unwrap();
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (Some(3), "42\n", "oops\n"));
        assert_eq!(r.failure(), "exit 3: oops");
        // More than a pipe holds, read whole.
        let r = sh("seq 1 100000", Duration::from_secs(10)).unwrap();
        assert!(r.success() && r.stdout.lines().count() == 100_000);
        let started = Instant::now();
        let e = sh("sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish within 0.2s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
