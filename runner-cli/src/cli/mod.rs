//! L4: argv, terminal output and exit codes. Thin: it parses the command line, loads what
//! the command needs, and hands over to the scheduler or the report. Every command returns
//! an [`Outcome`]; `error` turns it into the exit code, in one place.

mod actors;
mod error;
mod events;
mod init;
mod model;
mod out;
mod replay;
mod run;
mod show;
mod target;

use std::io::Write;
use std::path::{Path, PathBuf};

use actors::*;
use error::{exit_code, CliError, Done, Outcome};
pub use error::{EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};
use run::*;
use show::*;
use target::*;

use clap::{Parser, Subcommand, ValueEnum};
use out::{out, outln, sayln};

use crate::config;
use crate::domain::{ExperimentSpec, StoreLocation};
use crate::generate::Generator;
use crate::report::{self, Snapshot};
use crate::scheduler::{self, Launch, RunEnd, RunError};
use crate::store::{self, Ledger};

#[derive(Parser, Debug)]
#[command(name = "optx", version, about = "Closed-loop adaptive experiments from a TOML file")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Default)]
struct Overrides {
    /// Total trials of the experiment (overrides `orchestration.max_trials`)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_trials: Option<u64>,
    /// Trials deployed at once (overrides `orchestration.parallelism`)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    parallelism: Option<u64>,
    /// Print only the final summary
    #[arg(long, short)]
    quiet: bool,
    /// Print each event as a JSON object on its own line
    #[arg(long, conflicts_with = "quiet")]
    events_json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the experiment described by FILE
    Run {
        file: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Seed of the candidate sequence (overrides `experiment.seed`)
        #[arg(long)]
        seed: Option<u64>,
        /// Where to keep the store: a file, or a postgresql:// URL (default: `[storage]`,
        /// else .optx/<name>.db)
        #[arg(long, value_name = "PATH|URL")]
        store: Option<PathBuf>,
        /// Set an existing store aside (renamed to *.bak-<time>, never deleted) and start anew
        #[arg(long, conflicts_with = "join")]
        fresh: bool,
        /// One more worker of this experiment: create the store if nobody has yet, else
        /// join it (the file must match, as on resume) beside the workers already there
        #[arg(long)]
        join: bool,
        /// With --join: this worker creates at most N trials
        #[arg(long, value_name = "N", requires = "join", value_parser = clap::value_parser!(u64).range(1..))]
        max_trials_per_worker: Option<u64>,
        /// Runners whose jobs live elsewhere (external, slurm): deploy up to `parallelism`
        /// trials, record them and exit 0; a later `optx resume` collects them and goes on
        #[arg(long, conflicts_with = "join")]
        detach: bool,
    },
    /// Continue an experiment after a crash, an interrupt or a timeout, or to raise --max-trials
    Resume {
        /// The experiment file, or its store (.db)
        target: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// The store (a file or a postgresql:// URL), when TARGET is a file whose store was
        /// moved with --store
        #[arg(long, value_name = "PATH|URL")]
        store: Option<PathBuf>,
        /// Accept changes to parameters, objective, constraints or runner since the last run
        #[arg(long)]
        allow_changes: bool,
        /// Go on although `[global_stopping]` says the run has stopped improving
        #[arg(long)]
        ignore_global_stopping: bool,
    },
    /// Counts by status, running trials, best so far
    Status {
        target: PathBuf,
        /// Print it as JSON
        #[arg(long)]
        json: bool,
    },
    /// The best feasible parameters
    Best {
        target: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every trial
    Trials {
        target: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The same as --format json
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Check an experiment file and print the resolved search space
    Validate { file: PathBuf },
    /// New trials from the experiment's generator, for you to run; tell their results
    Ask {
        /// The store (or its experiment file)
        target: PathBuf,
        /// How many
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        #[arg(long)]
        json: bool,
    },
    /// Complete a trial from `ask` (or `attach`) with its metrics: m=v or m=v:sem ...
    Tell {
        target: PathBuf,
        trial: u64,
        /// Metrics, `name=value` or `name=value:sem`
        metrics: Vec<String>,
        /// Report a point of its learning curve at this progression instead
        #[arg(long, value_name = "P", conflicts_with_all = ["failed", "abandon"])]
        progression: Option<f64>,
        /// The trial failed, for this reason
        #[arg(long, value_name = "REASON", conflicts_with = "abandon")]
        failed: Option<String>,
        /// The trial was given up on, for this reason
        #[arg(long, value_name = "REASON")]
        abandon: Option<String>,
    },
    /// Add a trial that ran outside optx: p=v ... for its parameters
    Attach {
        target: PathBuf,
        /// Parameters, `name=value`
        params: Vec<String>,
        /// Its results too: m=v or m=v:sem ...
        #[arg(long = "tell", value_name = "METRIC", num_args = 1..)]
        tell: Vec<String>,
    },
    /// Settle the trials that nobody follows any more (dead workers, vanished processes)
    Clean {
        target: PathBuf,
        /// Say what would be done, and do nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The early-stopping rule over a finished experiment's learning curves: which trials it
    /// stops, at what progression, and the share of progressions saved
    Replay {
        /// The store (or the experiment file that names it)
        target: PathBuf,
        /// The rule of this file's [early_stopping] instead of the stored one
        #[arg(long, value_name = "FILE")]
        with: Option<PathBuf>,
    },
    /// A consistent copy of a store, while or after it runs (copying the .db file alone can
    /// miss what its -wal file holds)
    Backup {
        /// The store (or its experiment file)
        target: PathBuf,
        /// The new file to write
        dest: PathBuf,
    },
    /// One self-contained HTML file with the experiment's plots and trials (no network)
    Report {
        /// The store (or the experiment file that names it)
        target: PathBuf,
        /// The file to write
        #[arg(long, short, value_name = "FILE", default_value = "report.html")]
        output: PathBuf,
    },
    /// Write a commented starter file for a script: a parameter per placeholder of its
    /// command, a runner, an objective to fill in
    Init {
        /// The script's command, with a placeholder per parameter, e.g.
        /// "python3 train.py --lr={lr}"
        #[arg(long, value_name = "COMMAND")]
        command: Option<String>,
        /// The file to write (never overwritten; - prints it)
        #[arg(long, short, value_name = "FILE", default_value = "experiment.toml")]
        output: PathBuf,
    },
    /// The JSON Schema (draft 2020-12) of the experiment file, for editor completion and
    /// validation
    Schema,
    /// Shell completions for optx (source the output in the shell's startup file)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Table,
    Csv,
    Json,
}

/// The width of the terminal stdout is, if it is one (tables fit it; a pipe gets them whole).
fn terminal_width() -> Option<u16> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return None;
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<u16>().ok());
    columns.or_else(|| comfy_table::Table::new().width()).filter(|w| *w >= 40)
}

/// Colours on stderr: only on a terminal, and never with NO_COLOR set (no-color.org).
fn colours() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = colours();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Run the command line; returns the process's exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__shepherd") {
        return crate::exec::serve_shepherd(args.get(2).and_then(|p| p.parse().ok()));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    init_tracing();
    // The command line as the store keeps it: a URL's password is never stored.
    let line = args
        .iter()
        .map(|a| match a.split_once('=') {
            _ if crate::domain::is_server_url(a) => crate::domain::redact_url(a),
            Some((k, v)) if crate::domain::is_server_url(v) => format!("{k}={}", crate::domain::redact_url(v)),
            _ => a.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    exit_code(dispatch(cli.command, &line))
}

fn dispatch(command: Command, line: &str) -> Outcome {
    let line = line.to_string();
    match command {
        Command::Run { file, overrides, seed, store, fresh, join, max_trials_per_worker, detach } => {
            let worker = Worker { join, max_trials: max_trials_per_worker, detach };
            cmd_run(&file, overrides, seed, store, fresh, worker, &line)
        }
        Command::Resume { target, overrides, store, allow_changes, ignore_global_stopping } => {
            cmd_resume(&target, overrides, store, (allow_changes, ignore_global_stopping), &line)
        }
        Command::Status { target, json } => with_store(&target, |snap, path| {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&report::status_json(snap, &path.to_string())).unwrap_or_default()
                );
            } else {
                out!("{}", report::status(snap, &path.to_string()));
            }
            Ok(Done::Ok)
        }),
        Command::Best { target, json } => with_store(&target, |snap, _| {
            if json {
                let pick = model::model_best(snap);
                outln!("{}", serde_json::to_string_pretty(&report::best_json(snap, pick.as_ref())).unwrap_or_default());
            } else {
                out!("{}", report::best_text(snap, model::model_best(snap).as_ref()));
            }
            Ok(Done::Ok)
        }),
        Command::Trials { target, format, json } => {
            with_store(&target, |snap, _| match if json { Format::Json } else { format } {
                Format::Json => {
                    outln!("{}", serde_json::to_string_pretty(&report::trials_json(snap)).unwrap_or_default());
                    Ok(Done::Ok)
                }
                Format::Csv => {
                    out!("{}", report::trials_csv(snap).map_err(CliError::runtime)?);
                    Ok(Done::Ok)
                }
                Format::Table => {
                    out!("{}", report::trials_table(snap, terminal_width()));
                    Ok(Done::Ok)
                }
            })
        }
        Command::Validate { file } => cmd_validate(&file),
        Command::Backup { target, dest } => cmd_backup(&target, &dest),
        Command::Replay { target, with } => replay::cmd_replay(&target, with.as_deref()),
        Command::Ask { target, count, json } => cmd_ask(&target, count, json, &line),
        Command::Tell { target, trial, metrics, progression, failed, abandon } => {
            cmd_tell(&target, trial, &metrics, progression, failed, abandon, &line)
        }
        Command::Attach { target, params, tell } => cmd_attach(&target, &params, &tell, &line),
        Command::Clean { target, dry_run } => cmd_clean(&target, dry_run, &line),
        Command::Report { target, output } => cmd_report(&target, &output),
        Command::Init { command, output } => init::cmd_init(command.as_deref(), &output),
        Command::Schema => {
            outln!("{}", serde_json::to_string_pretty(&config::schema::schema()).unwrap_or_default());
            Ok(Done::Ok)
        }
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "optx", &mut text);
            out!("{}", String::from_utf8_lossy(&text));
            Ok(Done::Ok)
        }
    }
}
