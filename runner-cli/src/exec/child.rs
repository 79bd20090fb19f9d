//! What a trial's child process does between `fork` and `exec`: claim the trial's
//! `process.jsonl` with its own pid and start time (see [`super::record`]). If the claim
//! fails (a resume decided the trial never started, or the dir is gone), the child does
//! not exec: the trial cannot run behind a resume's back.
//!
//! This code runs in a forked child of a multi-threaded process, so it must be
//! async-signal-safe: no allocation, no locks, only system calls on buffers prepared
//! before the fork.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{linkat, openat, unlinkat, AtFlags, Mode, OFlags};

/// Everything the child needs, prepared in the parent.
pub(super) struct ChildClaim {
    /// The trial dir, opened before the fork.
    dir: OwnedFd,
    /// A name for the record while it is written, unique in the dir.
    tmp: CString,
    /// The record's text before the pid: `{"pid":`.
    head: &'static [u8],
    /// After the start time: `,"token":"..."}` and the newline.
    tail: Vec<u8>,
}

const RECORD_MAX: usize = 1024;

impl ChildClaim {
    pub(super) fn new(dir: OwnedFd, unique: u64, token: &str) -> std::io::Result<ChildClaim> {
        let tmp = CString::new(format!(".{}.{}.{unique}", super::PROCESS_FILE, std::process::id()))
            .map_err(std::io::Error::other)?;
        let token = serde_json::to_string(token).map_err(std::io::Error::other)?;
        let tail = format!(",\"token\":{token}}}\n").into_bytes();
        if tail.len() + 64 > RECORD_MAX {
            return Err(std::io::Error::other("the trial's token is too long"));
        }
        Ok(ChildClaim { dir, tmp, head: b"{\"pid\":", tail })
    }

    /// In the child: write the record and link it into place, or fail.
    pub(super) fn run(&self) -> std::io::Result<()> {
        let mut buf = [0u8; RECORD_MAX];
        let mut n = 0;
        let mut put = |bytes: &[u8], n: &mut usize| {
            buf[*n..*n + bytes.len()].copy_from_slice(bytes);
            *n += bytes.len();
        };
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u64;
        let mut digits = [0u8; 20];
        put(self.head, &mut n);
        put(decimal(pid, &mut digits), &mut n);
        put(b",\"start\":", &mut n);
        match self_start_time() {
            Some(s) => put(decimal(s, &mut digits), &mut n),
            None => put(b"null", &mut n),
        }
        put(&self.tail, &mut n);
        let err = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
        let dir = self.dir.as_fd();
        let fd = openat(
            dir,
            self.tmp.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(err)?;
        let mut written = 0;
        while written < n {
            match rustix::io::write(&fd, &buf[written..n]) {
                Ok(0) => break,
                Ok(k) => written += k,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    let _ = unlinkat(dir, self.tmp.as_c_str(), AtFlags::empty());
                    return Err(err(e));
                }
            }
        }
        drop(fd);
        let linked = linkat(dir, self.tmp.as_c_str(), dir, c"process.jsonl", AtFlags::empty());
        let _ = unlinkat(dir, self.tmp.as_c_str(), AtFlags::empty());
        linked.map_err(err)
    }
}

/// `x` in decimal, in `out`.
fn decimal(mut x: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    &out[i..]
}

/// This process's start time in clock ticks since boot (field 22 of `/proc/self/stat`).
fn self_start_time() -> Option<u64> {
    let fd = rustix::fs::open(c"/proc/self/stat", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    parse_start_time(&buf[..n])
}

/// The start time in the text of `/proc/PID/stat`: the 20th field after the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let mut fields = stat[close + 1..].split(|b| *b == b' ').filter(|f| !f.is_empty());
    let field = fields.nth(19)?;
    let mut x: u64 = 0;
    for b in field {
        if !b.is_ascii_digit() {
            break;
        }
        x = x.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_start_times_are_read_without_allocating() {
        let mut d = [0u8; 20];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(u64::MAX, &mut d), u64::MAX.to_string().as_bytes());
        let me = std::process::id();
        assert_eq!(self_start_time(), super::super::process_start_time(me));
        let odd = b"12 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19\n";
        assert_eq!(parse_start_time(odd), Some(777));
    }
}
