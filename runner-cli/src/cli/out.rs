//! Standard output of the commands. A closed stdout (`optx trials | head -1`) ends a
//! command that only reads quietly with exit 0, as ripgrep does, instead of a panic. The
//! commands that act on the ledger (`ask`, `tell`, `attach`, `clean`) exit 1 instead: what
//! they printed (a new trial's index, `stop`) was the point. After a run, the summary is
//! written if it can be and the run's own exit code stands.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the output of this command must be read (an actor's).
static MUST_BE_READ: AtomicBool = AtomicBool::new(false);

/// What this command prints must reach its reader: a closed stdout is a failure (exit 1).
pub(crate) fn must_be_read() {
    MUST_BE_READ.store(true, Ordering::SeqCst);
}

/// Write `text` to stdout; if the reader went away, exit at once: 0, or 1 for an actor.
pub(crate) fn write(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            if MUST_BE_READ.load(Ordering::SeqCst) {
                eprintln!("error: stdout was closed before optx could say what it did (`optx status` shows it)");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Write `text` to stdout if it can be read, and go on either way (a run's summary: the
/// run's exit code is what counts).
pub(crate) fn write_if_read(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text).and_then(|_| out.flush());
}

/// `println!` for the commands' output (see [`write`]).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for the commands' output (see [`write`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

/// `println!` that never exits (see [`write_if_read`]).
macro_rules! sayln {
    ($($arg:tt)*) => { $crate::cli::out::write_if_read(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {out, outln, sayln};
