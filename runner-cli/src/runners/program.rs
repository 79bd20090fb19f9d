//! Whether the program a command runner starts exists here (for `optx validate`): on PATH,
//! or as a file relative to the trials' working directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::domain::{CommandSpec, Segment, Template};

/// Words `sh -c` runs without a program of that name.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "[", "alias", "break", "case", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "for", "if", "printf", "pwd", "read", "return", "set", "shift", "source", "test", "time", "trap", "true",
    "ulimit", "umask", "unset", "until", "wait", "while", "{", "(",
];

/// The literal program name a template starts with, if it has one: all of `argv[0]`, or the
/// first word of a shell command.
fn program_of(command: &CommandSpec) -> Option<String> {
    let first: &Template = command.argv.first()?;
    let Some(Segment::Literal(text)) = first.segments.first() else { return None };
    if !command.shell {
        return (first.segments.len() == 1).then(|| text.clone());
    }
    let word = text.split_whitespace().next()?;
    // The word must end where the literal does not go on into a placeholder.
    let whole = first.segments.len() == 1 || text.trim_start().len() > word.len();
    let plain = word.chars().all(|c| c.is_ascii_alphanumeric() || "._/+-".contains(c)) && !word.contains('=');
    (whole && plain && !SHELL_WORDS.contains(&word)).then(|| word.to_string())
}

/// Check that the command's program can be started: `Err` says what is missing.
pub fn check_program(command: &CommandSpec, base_dir: &Path) -> Result<(), String> {
    let Some(program) = program_of(command) else { return Ok(()) };
    // A PATH of the runner's own is only known when a trial starts.
    if command.env.iter().any(|(k, _)| k == "PATH") {
        return Ok(());
    }
    let origin = &command.origin;
    if program.contains('/') {
        let dir = match command.workdir.as_ref().map(|t| t.segments.as_slice()) {
            None => base_dir.to_path_buf(),
            Some([Segment::Literal(w)]) => base_dir.join(w),
            // A working directory with placeholders is known per trial only.
            Some(_) => return Ok(()),
        };
        let path = dir.join(&program);
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(m) if m.is_file() => Err(format!(
                "{origin}: `{program}` ({}) is not executable: `chmod +x` it, or run it through its interpreter (command = [\"python3\", \"{program}\", ...])",
                path.display()
            )),
            Ok(_) => Err(format!("{origin}: `{program}` ({}) is not a file", path.display())),
            Err(_) => Err(format!(
                "{origin}: `{program}` does not exist ({} is looked up from {}, the trials' working directory)",
                path.display(),
                dir.display()
            )),
        };
    }
    match crate::exec::which(&program) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{origin}: `{program}` is not on PATH{}",
            if dir_has(base_dir, &program) {
                format!(" (there is a `{program}` in {}: write `./{program}`)", base_dir.display())
            } else {
                String::new()
            }
        )),
    }
}

fn dir_has(dir: &Path, name: &str) -> bool {
    dir.join(name).is_file()
}
