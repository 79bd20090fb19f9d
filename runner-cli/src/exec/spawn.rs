//! Starting a trial's process with `posix_spawn`, whose child, before it execs, creates the
//! trial's `process.jsonl` exclusively (`O_CREAT | O_EXCL`): the trial is recorded as
//! started before it can run, and if the file exists already (a resume claimed the trial
//! as never started), the child does not exec and the spawn fails with `EEXIST`.
//!
//! `posix_spawn` rather than `std::process::Command` with a `pre_exec` hook: a hook needs a
//! full `fork`, and the copy-on-write faults that follow cost a fifth of the throughput of
//! short trials; `posix_spawn` (a vfork-like clone) runs the file actions in the child
//! without it.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the child gets.
pub(super) struct Spawn<'a> {
    pub program: &'a Path,
    /// argv[0] included.
    pub argv: &'a [String],
    /// This process's environment, read once.
    pub base_env: &'a [(std::ffi::OsString, std::ffi::OsString)],
    /// Added to (or overriding) `base_env`.
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// The trial dir, open: the claim is made in it, whatever its path has become.
    pub dir: BorrowedFd<'a>,
    /// The file the child creates exclusively in `dir` before it execs.
    pub claim: &'a str,
}

fn cstring(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in an argument or the environment"))
}

/// An error number of the posix_spawn family as an `io::Error`.
fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}

/// The file `program` names, looked up along `path` (a `PATH` value) if it has no `/`.
pub(super) fn resolve(program: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Some(program.to_path_buf());
    }
    let path = path.map(OsStr::to_os_string).or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Start the process in a process group of its own, stdin from /dev/null. Returns its pid.
pub(super) fn spawn(s: &Spawn) -> std::io::Result<u32> {
    let program = cstring(s.program.as_os_str())?;
    let argv: Vec<CString> = s.argv.iter().map(|a| cstring(OsStr::new(a))).collect::<Result<_, _>>()?;
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = s.base_env.to_vec();
    for (k, v) in s.env {
        match env.iter_mut().find(|(ek, _)| ek.as_bytes() == k.as_bytes()) {
            Some(slot) => slot.1 = v.into(),
            None => env.push((k.into(), v.into())),
        }
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| std::io::Error::other("a NUL byte in the environment"))
        })
        .collect::<Result<_, _>>()?;
    let cwd = cstring(s.cwd.as_os_str())?;
    let claim = cstring(OsStr::new(s.claim))?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    envp_p.push(std::ptr::null_mut());

    let mut actions = FileActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY, 0)?;
    actions.dup2(s.stdout.as_raw_fd(), 1)?;
    actions.dup2(s.stderr.as_raw_fd(), 2)?;
    // The claim, made in the trial dir as it was opened (a dir since deleted fails with
    // ENOENT, one re-created at the same path is not it): onto fd 3 (dup'd there, so not
    // close-on-exec) and closed at once. Then the working dir, and nothing else open.
    actions.fchdir(s.dir.as_raw_fd())?;
    actions.open(3, &claim, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644)?;
    actions.close(3)?;
    actions.chdir(&cwd)?;
    actions.close_from(3)?;
    let attr = Attr::new()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `program` and the strings of `argv_p`
    // and `envp_p` live until the end of this function, both arrays end with a null
    // pointer, and `actions`/`attr` were initialized by their constructors.
    let r =
        unsafe { libc::posix_spawn(&mut pid, program.as_ptr(), &actions.0, &attr.0, argv_p.as_ptr(), envp_p.as_ptr()) };
    check(r)?;
    Ok(pid as u32)
}

/// `posix_spawn_file_actions_t`, destroyed when dropped.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> std::io::Result<FileActions> {
        // SAFETY: all zeroes is a valid bit pattern for the C struct; init then sets it up.
        let mut a: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `a` is a valid, writable posix_spawn_file_actions_t.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut a) })?;
        Ok(FileActions(a))
    }

    fn open(&mut self, fd: libc::c_int, path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized; glibc copies `path` into the action.
        check(unsafe { libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, mode) })
    }

    fn dup2(&mut self, from: libc::c_int, to: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn close(&mut self, fd: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized.
        check(unsafe { libc::posix_spawn_file_actions_addclose(&mut self.0, fd) })
    }

    fn fchdir(&mut self, dir: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized.
        check(unsafe { libc::posix_spawn_file_actions_addfchdir_np(&mut self.0, dir) })
    }

    /// Close every descriptor from `from` on (none a plugin or this process opened leaks).
    fn close_from(&mut self, from: libc::c_int) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) })
    }

    fn chdir(&mut self, dir: &CStr) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialized; glibc copies `dir` into the action.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialized and is destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`: a process group of its own, no signal blocked, and SIGPIPE (which
/// this process ignores) back to its default.
struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> std::io::Result<Attr> {
        // SAFETY: all zeroes is a valid bit pattern for the C struct; init then sets it up.
        let mut a: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `a` is a valid, writable posix_spawnattr_t.
        check(unsafe { libc::posix_spawnattr_init(&mut a) })?;
        let mut attr = Attr(a);
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize and fill it.
        let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut default: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid, writable sigset_t values and a valid, initialized attribute.
        unsafe {
            libc::sigemptyset(&mut none);
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &none))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &default))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags as libc::c_short))?;
        }
        Ok(attr)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialized and is destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn run(dir: &Path, argv: &[&str], env: &[(&str, &str)]) -> std::io::Result<(u32, String)> {
        let out = std::fs::File::create(dir.join("out"))?;
        let err = std::fs::File::create(dir.join("err"))?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let program = resolve(Path::new(&argv[0]), None).unwrap();
        let d = std::fs::File::open(dir)?;
        let base: Vec<_> = std::env::vars_os().collect();
        let pid = spawn(&Spawn {
            program: &program,
            argv: &argv,
            base_env: &base,
            env: &env,
            cwd: dir,
            stdout: out.as_fd(),
            stderr: err.as_fd(),
            dir: d.as_fd(),
            claim: "claim",
        })?;
        let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()).unwrap();
        Ok((pid, std::fs::read_to_string(dir.join("out"))?))
    }

    #[test]
    fn the_child_gets_its_argv_env_cwd_group_and_claims_its_file() {
        let d = tempfile::tempdir().unwrap();
        let script = "printf '%s|%s|%s|' \"$1\" \"$OPTX_X\" \"$PWD\"; cut -d' ' -f5 /proc/$$/stat | tr -d '\\n'; \
                      grep SigIgn /proc/$$/status | cut -f2 | tr -d '\\n'; printf '|'; ls /proc/$$/fd | tr '\\n' ' '";
        // A descriptor this process has open without close-on-exec must not reach the child.
        let leak = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&leak);
        // SAFETY: `fd` is a valid descriptor owned by `leak`, which outlives the call.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let (pid, out) = run(d.path(), &["sh", "-c", script, "sh", "a b"], &[("OPTX_X", "1")]).unwrap();
        let cwd = d.path().canonicalize().unwrap();
        let want = format!("a b|1|{}|{pid}", cwd.display());
        assert!(out.starts_with(&want), "pgid is its own pid: {out}");
        let (ignored, fds) = out[want.len()..].trim_start_matches('|').split_once('|').unwrap();
        let ignored = u64::from_str_radix(ignored, 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is not ignored in the child: {out}");
        let fds: Vec<i32> = fds.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        assert!(!fds.contains(&fd), "fd {fd} leaked into the child: {fds:?}");
        drop(leak);
        assert!(d.path().join("claim").exists());
        // Claimed already: the program never runs.
        let e = run(d.path(), &["sh", "-c", "echo ran"], &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read_to_string(d.path().join("out")).unwrap(), "");
    }

    #[test]
    fn programs_are_found_along_the_path_given() {
        assert!(resolve(Path::new("sh"), None).is_some_and(|p| p.is_absolute()));
        assert_eq!(resolve(Path::new("sh"), Some(OsStr::new("/nonexistent"))), None);
        assert_eq!(resolve(Path::new("./x"), None), Some(PathBuf::from("./x")));
    }
}
