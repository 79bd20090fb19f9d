//! The one error type of the command line, and the one place where exit codes are decided:
//! 0 done, 1 runtime failure, 2 bad input, 130 interrupted (CONFIG.md).

use std::fmt;

use crate::scheduler::RunError;

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// How a command that did its work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Ok,
    /// The run stopped itself on a runtime condition (the failure rate, trials lost in a
    /// row), its reason said already.
    Stopped,
    /// Interrupted, its state saved: resumable.
    Interrupted,
}

/// Why a command could not do its work.
#[derive(Debug, Clone, PartialEq)]
pub enum CliError {
    /// Bad input: the file, the arguments, a store in use, damaged or of another kind.
    Usage(String),
    /// A failure while doing the work.
    Runtime(String),
    /// Bad input whose errors were printed already (every error of a file, say).
    Reported,
}

impl CliError {
    pub fn usage(m: impl fmt::Display) -> CliError {
        CliError::Usage(m.to_string())
    }

    pub fn runtime(m: impl fmt::Display) -> CliError {
        CliError::Runtime(m.to_string())
    }
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> CliError {
        match e {
            e @ (RunError::Usage(_) | RunError::Owned { .. }) => CliError::usage(e),
            e @ RunError::Runtime(_) => CliError::runtime(e),
        }
    }
}

/// What a command returns.
pub type Outcome = Result<Done, CliError>;

/// The exit code of a command's outcome. Errors are printed here, all the same way.
pub fn exit_code(outcome: Outcome) -> i32 {
    match outcome {
        Ok(Done::Ok) => EXIT_OK,
        Ok(Done::Stopped) => EXIT_RUNTIME,
        Ok(Done::Interrupted) => EXIT_INTERRUPTED,
        Err(CliError::Reported) => EXIT_USAGE,
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m}");
            EXIT_USAGE
        }
        Err(CliError::Runtime(m)) => {
            eprintln!("error: {m}");
            EXIT_RUNTIME
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_exit_code() {
        assert_eq!(exit_code(Ok(Done::Ok)), 0);
        assert_eq!(exit_code(Ok(Done::Stopped)), 1);
        assert_eq!(exit_code(Ok(Done::Interrupted)), 130);
        assert_eq!(exit_code(Err(CliError::usage("x"))), 2);
        assert_eq!(exit_code(Err(CliError::Reported)), 2);
        assert_eq!(exit_code(Err(CliError::runtime("x"))), 1);
        assert_eq!(CliError::from(RunError::Runtime("r".into())), CliError::Runtime("r".into()));
    }
}
