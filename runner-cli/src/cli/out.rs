//! Standard output for the one-shot commands: a closed stdout (`optx trials | head -1`)
//! ends the command quietly with exit 0, as ripgrep does, instead of a panic.

use std::io::Write;

/// Write `text` to stdout; if the reader went away, exit 0 at once (nothing is left to do
/// for a command whose output nobody reads; the store is never written by these).
pub(crate) fn write(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the commands' output (see [`write`]).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for the commands' output (see [`write`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};
