//! L4: argv, terminal output and exit codes. Thin: it parses the command line, loads what
//! the command needs, and hands over to the scheduler or the report.
//!
//! Exit codes: 0 done, 1 runtime failure (e.g. failure rate exceeded), 2 bad input
//! (config, arguments, a store in use), 130 interrupted (state saved, resumable).

mod events;
mod init;
mod out;
mod replay;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use out::{out, outln};

use crate::config;
use crate::domain::{ExperimentSpec, StoreLocation};
use crate::generate::Generator;
use crate::report::{self, Snapshot};
use crate::scheduler::{self, Launch, RunEnd, RunError};
use crate::store::{self, Ledger};

/// The starter file of `optx init` for `command` (an example command when it has none).
pub fn starter_file(command: &str) -> String {
    init::starter(command).unwrap_or_else(|e| e)
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

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

/// Print an error the way every error is printed.
fn fail(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    code
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
    match cli.command {
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
            EXIT_OK
        }),
        Command::Best { target, json } => with_store(&target, |snap, _| {
            if json {
                outln!("{}", serde_json::to_string_pretty(&report::best_json(snap)).unwrap_or_default());
            } else {
                out!("{}", report::best_text(snap));
            }
            EXIT_OK
        }),
        Command::Trials { target, format, json } => {
            with_store(&target, |snap, _| match if json { Format::Json } else { format } {
                Format::Json => {
                    outln!("{}", serde_json::to_string_pretty(&report::trials_json(snap)).unwrap_or_default());
                    EXIT_OK
                }
                Format::Csv => match report::trials_csv(snap) {
                    Ok(s) => {
                        out!("{s}");
                        EXIT_OK
                    }
                    Err(e) => fail(EXIT_RUNTIME, e),
                },
                Format::Table => {
                    out!("{}", report::trials_table(snap, terminal_width()));
                    EXIT_OK
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
            EXIT_OK
        }
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "optx", &mut text);
            out!("{}", String::from_utf8_lossy(&text));
            EXIT_OK
        }
    }
}

/// At most this many errors of a file are printed (the first ones, in file order).
const ERRORS_SHOWN: usize = 50;

fn load(file: &Path) -> Result<(ExperimentSpec, String), i32> {
    match config::load(file) {
        Ok((spec, text)) => {
            for w in &spec.warnings {
                eprintln!("warning: {w}");
            }
            Ok((spec, text))
        }
        Err(e) => {
            let mut err = std::io::stderr().lock();
            for line in e.0.iter().take(ERRORS_SHOWN) {
                let _ = writeln!(err, "{line}");
            }
            let n = e.0.len();
            if n > ERRORS_SHOWN {
                let _ = writeln!(err, "error: ... and {} more (fix these first)", n - ERRORS_SHOWN);
            }
            let _ = writeln!(err, "error: {} has {n} error{}", file.display(), if n == 1 { "" } else { "s" });
            Err(EXIT_USAGE)
        }
    }
}

fn apply(spec: &mut ExperimentSpec, o: &Overrides, stored: &serde_json::Value) -> serde_json::Value {
    let mut kept = stored.as_object().cloned().unwrap_or_default();
    if let Some(n) = o.max_trials {
        kept.insert("max_trials".into(), n.into());
    }
    if let Some(n) = o.parallelism {
        kept.insert("parallelism".into(), n.into());
    }
    if let Some(n) = kept.get("max_trials").and_then(|v| v.as_u64()) {
        spec.orchestration.max_trials = n;
    }
    if let Some(n) = kept.get("parallelism").and_then(|v| v.as_u64()) {
        spec.orchestration.parallelism = n as usize;
    }
    serde_json::Value::Object(kept)
}

/// The bounds the file's own values are held to hold for the command line's too.
fn check_overrides(spec: &ExperimentSpec, o: &Overrides) -> Result<(), i32> {
    if let Some(n) = o.parallelism {
        let local = matches!(spec.runner, crate::domain::RunnerSpec::Command(_));
        crate::domain::Orchestration::check_parallelism(n, local)
            .map_err(|why| fail(EXIT_USAGE, format!("--parallelism {why}")))?;
    }
    Ok(())
}

fn exe() -> Result<PathBuf, i32> {
    std::env::current_exe().map_err(|e| fail(EXIT_RUNTIME, format!("cannot find the optx executable: {e}")))
}

/// How `run` takes part in the experiment: alone, or as one more worker.
struct Worker {
    join: bool,
    max_trials: Option<u64>,
    detach: bool,
}

fn cmd_run(
    file: &Path,
    o: Overrides,
    seed: Option<u64>,
    store: Option<PathBuf>,
    fresh: bool,
    worker: Worker,
    line: &str,
) -> i32 {
    let (mut spec, text) = match load(file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if let Some(s) = seed {
        spec.seed = Some(s);
    }
    if let Some(p) = store {
        spec.store = location(&p).for_experiment(&spec.name);
    }
    let overrides = apply(&mut spec, &o, &serde_json::json!({}));
    if let Err(c) = check_overrides(&spec, &o) {
        return c;
    }
    spec.orchestration.max_trials_per_worker = worker.max_trials;
    if worker.detach && !matches!(spec.runner, crate::domain::RunnerSpec::External(_)) {
        return fail(
            EXIT_USAGE,
            format!(
                "{}: --detach needs a runner whose jobs outlive optx (`kind = \"external\"` or `\"slurm\"`): the trials of this runner end with optx",
                file.display()
            ),
        );
    }
    spec.orchestration.detach = worker.detach;
    let exe = match exe() {
        Ok(e) => e,
        Err(c) => return c,
    };
    let spec_path = absolute(file);
    start(
        Launch {
            spec,
            spec_text: text,
            spec_path,
            resume: false,
            fresh,
            join: worker.join,
            exe,
            command_line: line.into(),
            overrides,
        },
        &o,
    )
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A store named on the command line: a server URL, or a file.
fn location(p: &Path) -> StoreLocation {
    let s = p.to_string_lossy();
    if crate::domain::is_server_url(&s) {
        StoreLocation::parse(&s, Path::new(""))
    } else {
        StoreLocation::File(absolute(p))
    }
}

fn is_store(p: &Path) -> bool {
    crate::domain::is_server_url(&p.to_string_lossy()) || p.extension().is_some_and(|e| e != "toml")
}

/// A server store opened without its experiment's name knows it once open.
/// (Its schema's name, which the store's location says: not the name its file gives, which
/// a copy under another name keeps.)
fn named(path: StoreLocation, store: &dyn Ledger) -> StoreLocation {
    let StoreLocation::Server { experiment: None, .. } = &path else { return path };
    match StoreLocation::parse(&store.location(), Path::new("")) {
        StoreLocation::Server { experiment: Some(e), .. } => path.for_experiment(&e),
        _ => path,
    }
}

/// Open the store of TARGET (a store, or an experiment file) with the spec it holds.
fn open_target(target: &Path) -> Result<(Box<dyn Ledger>, ExperimentSpec, StoreLocation), i32> {
    let path = if is_store(target) {
        location(target)
    } else {
        let (spec, _) = load(target)?;
        spec.store
    };
    let store = store::open_read(&path).map_err(|e| {
        let hint = match &e {
            crate::store::StoreError::Unusable(m) if m.starts_with("there is no store") && !is_store(target) => {
                format!(" (has `optx run {}` run yet?)", target.display())
            }
            _ => String::new(),
        };
        fail(EXIT_USAGE, format!("{e}{hint}"))
    })?;
    let exp = match store.experiment() {
        Ok(Some(e)) => e,
        Ok(None) => return Err(fail(EXIT_USAGE, format!("{path} holds no experiment"))),
        Err(e) => return Err(fail(EXIT_RUNTIME, e)),
    };
    let mut spec = config::parse(&exp.spec_toml, &exp.spec_path.display().to_string(), &exp.base_dir)
        .map_err(|e| fail(EXIT_RUNTIME, format!("the experiment file stored in {path} no longer parses:\n{e}")))?;
    let path = named(path, store.as_ref());
    spec.store = path.clone();
    apply(&mut spec, &Overrides::default(), &exp.overrides);
    Ok((store, spec, path))
}

fn with_store(target: &Path, f: impl FnOnce(&Snapshot, &StoreLocation) -> i32) -> i32 {
    let (store, spec, path) = match open_target(target) {
        Ok(x) => x,
        Err(c) => return c,
    };
    // The final values and the newest point of each running trial: never every point of
    // every curve (a store may hold millions).
    let (trials, finals, workers) = match (store.trials(), store.final_observations(), store.workers()) {
        (Ok(t), Ok(o), Ok(w)) => (t, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(EXIT_RUNTIME, e),
    };
    let open: Vec<u64> = trials.iter().filter(|t| !t.status.is_terminal()).map(|t| t.index).collect();
    let latest = match store.latest_points(&open) {
        Ok(l) => l,
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let mut snap = Snapshot::new(&spec, &trials, &finals);
    snap.latest = latest;
    snap.workers = workers.iter().map(|w| worker_view(w, &trials)).collect();
    f(&snap, &path)
}

fn cmd_report(target: &Path, output: &Path) -> i32 {
    let (store, spec, path) = match open_target(target) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (trials, obs, workers) = match (store.trials(), store.observations(), store.workers()) {
        (Ok(t), Ok(o), Ok(w)) => (t, o, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(EXIT_RUNTIME, e),
    };
    // The curves to draw: the early-stopping metric's, else the first objective's metric.
    let metric = spec
        .early_stopping
        .as_ref()
        .map(|e| e.metric.clone())
        .or_else(|| spec.goal.objectives.first().and_then(|o| o.terms.first()).map(|t| t.0.clone()))
        .unwrap_or_default();
    let mut curves: std::collections::BTreeMap<u64, Vec<(f64, f64)>> = Default::default();
    for o in obs.iter().filter(|o| !o.is_final && o.metric == metric && o.mean.is_finite()) {
        if let Some(p) = o.progression {
            curves.entry(o.trial).or_default().push((p, o.mean));
        }
    }
    let mut snap = Snapshot::new(&spec, &trials, &obs);
    snap.workers = workers.iter().map(|w| worker_view(w, &trials)).collect();
    let extra = report::html::Extra {
        curves: &curves,
        curve_metric: metric,
        generated: format!("written {} by optx {} from {path}", store::now(), env!("CARGO_PKG_VERSION")),
    };
    let page = report::html::report(&snap, &extra);
    // Written beside, then renamed: a report is whole or not there.
    let tmp = output.with_extension("html.partial");
    if let Err(e) = std::fs::write(&tmp, page.as_bytes()).and_then(|_| std::fs::rename(&tmp, output)) {
        let _ = std::fs::remove_file(&tmp);
        return fail(EXIT_RUNTIME, format!("writing {}: {e}", output.display()));
    }
    eprintln!("optx: wrote {} ({} trials, {} kB)", output.display(), trials.len(), page.len() / 1024);
    EXIT_OK
}

/// A worker as the reports show it: its state decided here (liveness needs the processes).
fn worker_view(w: &crate::store::Worker, trials: &[crate::domain::Trial]) -> report::WorkerView {
    let state = if let Some(code) = w.exit_code.filter(|_| w.ended_at.is_some()) {
        format!("ended, exit {code}")
    } else if w.ended_at.is_some() {
        "ended".into()
    } else if w.taken_over.is_some() {
        "dead (its trials were taken over)".into()
    } else if scheduler::worker_alive(w) {
        "live".into()
    } else {
        "dead (`optx resume` takes its trials over)".into()
    };
    let held = trials.iter().filter(|t| !t.status.is_terminal() && t.holder == Some(w.id)).count();
    report::WorkerView {
        id: w.id,
        host: w.host.clone(),
        pid: w.pid,
        started: w.started_at.clone(),
        renewed: w.renewed_at.clone(),
        held,
        state,
    }
}

fn cmd_resume(target: &Path, o: Overrides, store: Option<PathBuf>, flags: (bool, bool), line: &str) -> i32 {
    let (allow_changes, ignore_global_stopping) = flags;
    let store_path = match (&store, is_store(target)) {
        (Some(p), true) => location(p),
        (None, true) => location(target),
        (_, false) => match load(target) {
            // A file names its experiment: a server store of it is that experiment's.
            Ok((spec, _)) => match store {
                Some(p) => location(&p).for_experiment(&spec.name),
                None => spec.store,
            },
            Err(c) => return c,
        },
    };
    let st = match store::open_read(&store_path) {
        Ok(s) => s,
        Err(e) => {
            let advice = match &e {
                crate::store::StoreError::Unusable(m) if m.starts_with("there is no store") => {
                    ": nothing to resume (start the experiment with `optx run FILE.toml`)"
                }
                _ => "",
            };
            return fail(EXIT_USAGE, format!("{e}{advice}"));
        }
    };
    let exp = match st.experiment() {
        Ok(Some(e)) => e,
        Ok(None) => return fail(EXIT_USAGE, format!("{store_path} holds no experiment: start it with `optx run`")),
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let store_path = named(store_path, st.as_ref());
    drop(st);
    let (mut spec, text, spec_path) = if is_store(target) {
        match config::parse(&exp.spec_toml, &exp.spec_path.display().to_string(), &exp.base_dir) {
            Ok(s) => (s, exp.spec_toml.clone(), exp.spec_path.clone()),
            Err(e) => return fail(EXIT_RUNTIME, format!("the stored experiment file no longer parses:\n{e}")),
        }
    } else {
        let (spec, text) = match load(target) {
            Ok(x) => x,
            Err(c) => return c,
        };
        let changes = config::fixed_part_changes(&exp.spec_toml, &text);
        if !changes.is_empty() && !allow_changes {
            eprintln!(
                "error: {} changed since the experiment started, in parts that may not change on resume:",
                target.display()
            );
            for c in &changes {
                eprintln!("  {c}");
            }
            eprintln!("Resume from the store (`optx resume {store_path}`) to run as before, or pass --allow-changes to accept the changes.");
            return EXIT_USAGE;
        }
        if !changes.is_empty() {
            eprintln!("optx: accepting {} change(s) to the experiment (--allow-changes)", changes.len());
        }
        (spec, text, absolute(target))
    };
    spec.store = store_path;
    // From the store, the overrides of earlier command lines still hold; from a file, the
    // file's values win (only this command line's overrides apply).
    let kept = if is_store(target) {
        exp.overrides.clone()
    } else {
        for (key, value) in exp.overrides.as_object().into_iter().flatten() {
            let flag = key.replace('_', "-");
            if (key == "max_trials" && o.max_trials.is_none()) || (key == "parallelism" && o.parallelism.is_none()) {
                eprintln!(
                    "optx: `--{flag} {value}` of an earlier command line no longer applies: {} is resumed as it says",
                    target.display()
                );
            }
        }
        serde_json::json!({})
    };
    let overrides = apply(&mut spec, &o, &kept);
    if let Err(c) = check_overrides(&spec, &o) {
        return c;
    }
    spec.orchestration.ignore_global_stopping = ignore_global_stopping;
    let exe = match exe() {
        Ok(e) => e,
        Err(c) => return c,
    };
    start(
        Launch {
            spec,
            spec_text: text,
            spec_path,
            resume: true,
            fresh: false,
            join: false,
            exe,
            command_line: line.into(),
            overrides,
        },
        &o,
    )
}

fn start(l: Launch, o: &Overrides) -> i32 {
    let store_path = l.spec.store.clone();
    let spec = l.spec.clone();
    let mut printer = events::Printer::new(o.quiet, o.events_json);
    let end = scheduler::launch(l, &mut printer);
    printer.finish();
    let code = match &end {
        Ok(RunEnd::Done | RunEnd::Detached(_) | RunEnd::Deadline(_)) => EXIT_OK,
        Ok(RunEnd::FailureRate | RunEnd::TooManyLost) => EXIT_RUNTIME,
        Ok(RunEnd::Interrupted) => EXIT_INTERRUPTED,
        Err(e @ (RunError::Usage(_) | RunError::Owned { .. })) => return fail(EXIT_USAGE, e),
        Err(e @ RunError::Runtime(_)) => return fail(EXIT_RUNTIME, e),
    };
    // The summary, from the store as committed (aggregates: a long run is not loaded).
    // Read-write, as the run was: its connection, the last, leaves the store one file.
    if let Ok(store) = store::open_existing(&store_path) {
        let summary = (|| -> Result<report::Summary, crate::store::StoreError> {
            let mut counts = std::collections::BTreeMap::new();
            for (status, lost, n) in store.status_counts()? {
                *counts.entry(if lost { "LOST".to_string() } else { status }).or_insert(0) += n;
            }
            Ok(report::Summary { counts, feasible: store.feasible_count()?, best: store.best(&spec.goal)? })
        })();
        if let (Ok(summary), true) = (&summary, o.events_json) {
            // The last event: how the run ended and what it found, for scripts.
            let end = match &end {
                Ok(RunEnd::Interrupted) => "interrupted",
                Ok(RunEnd::FailureRate) => "failure_rate",
                Ok(RunEnd::TooManyLost) => "too_many_lost",
                Ok(RunEnd::Deadline(_)) => "timeout_hours",
                Ok(RunEnd::Detached(_)) => "detached",
                _ => "done",
            };
            let best: Vec<serde_json::Value> = summary
                .best
                .iter()
                .map(|(i, v, p)| serde_json::json!({"trial": i, "objectives": v, "parameters": p}))
                .collect();
            outln!(
                "{}",
                serde_json::json!({"event": "summary", "end": end, "exit_code": code, "trials": summary.counts,
                    "feasible": summary.feasible, "best": best, "store": store_path.to_string()})
            );
        }
        if let (Ok(summary), false) = (summary, o.events_json) {
            let verb = match end {
                Ok(RunEnd::Interrupted) => format!("interrupted (resume with `optx resume {store_path}`)"),
                Ok(RunEnd::FailureRate) => "stopped: too many trials failed".into(),
                Ok(RunEnd::TooManyLost) => "stopped: too many trials were lost".into(),
                Ok(RunEnd::Deadline(n)) => {
                    format!("timeout_hours reached: {n} trial(s) left running; `optx resume {store_path}` follows them")
                }
                Ok(RunEnd::Detached(n)) => format!(
                    "detached: {n} trial(s) run on without optx; `optx resume {store_path}` collects them and goes on"
                ),
                _ => "done".into(),
            };
            outln!("optx: {verb}: {}", report::summary_line(&spec, &summary));
            outln!("optx: {}", report::best_line(&spec, &summary));
        }
    }
    code
}

/// The store of `target` opened to act on it, with its experiment, joined as a worker
/// beside those that run it; its session id.
fn act_on(target: &Path, line: &str) -> Result<(Box<dyn Ledger>, ExperimentSpec, u64, i64), i32> {
    let (_, spec, path) = open_target(target)?;
    let mut store = store::open_existing(&path).map_err(|e| fail(EXIT_USAGE, e))?;
    let seed = match store.experiment() {
        Ok(Some(e)) => e.seed,
        Ok(None) => return Err(fail(EXIT_USAGE, format!("{path} holds no experiment"))),
        Err(e) => return Err(fail(EXIT_RUNTIME, e)),
    };
    let pid = std::process::id();
    let host = crate::exec::hostname();
    let me = store::NewWorker {
        command: line,
        pid,
        process_start: crate::exec::process_start_time(pid),
        host: &host,
        lease_seconds: spec.orchestration.worker_lease_seconds,
    };
    let session = store.join(&me, false, &scheduler::worker_alive).map_err(|e| fail(EXIT_USAGE, e))?;
    Ok((store, spec, seed, session))
}

fn run_error(e: RunError) -> i32 {
    match e {
        e @ (RunError::Usage(_) | RunError::Owned { .. }) => fail(EXIT_USAGE, e),
        e @ RunError::Runtime(_) => fail(EXIT_RUNTIME, e),
    }
}

/// `name=value` pairs of the command line.
fn pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>, i32> {
    items
        .iter()
        .map(|i| match i.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(fail(EXIT_USAGE, format!("`{i}`: give {what} as name=value"))),
        })
        .collect()
}

/// `m=v` or `m=v:sem` values.
fn reported(items: &[String]) -> Result<Vec<scheduler::Reported>, i32> {
    pairs(items, "each metric")?
        .into_iter()
        .map(|(metric, v)| {
            let (mean, sem) = match v.split_once(':') {
                Some((m, s)) => (m, Some(s)),
                None => (v.as_str(), None),
            };
            let num = |x: &str| {
                x.trim().parse::<f64>().map_err(|_| fail(EXIT_USAGE, format!("`{metric}={v}`: `{x}` is not a number")))
            };
            Ok(scheduler::Reported { mean: num(mean)?, sem: sem.map(num).transpose()?, metric })
        })
        .collect()
}

fn print_asked(a: &scheduler::Asked, json: bool) {
    if json {
        outln!("{}", serde_json::json!({"index": a.index, "parameters": a.parameters, "generation": a.generation}));
    } else {
        outln!("{}\t{}", a.index, report::params_inline(&a.parameters));
    }
}

fn cmd_ask(target: &Path, count: u64, json: bool, line: &str) -> i32 {
    let (mut store, spec, seed, session) = match act_on(target, line) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let asked = scheduler::ask(&spec, store.as_mut(), session, seed, count);
    let _ = store.leave(session, Some(if asked.is_ok() { 0 } else { 1 }));
    match asked {
        Ok(list) => {
            for a in &list {
                print_asked(a, json);
            }
            if (list.len() as u64) < count {
                eprintln!(
                    "optx: {} of {count} trial(s): the budget (max_trials = {}) or the search space is spent",
                    list.len(),
                    spec.orchestration.max_trials
                );
            }
            EXIT_OK
        }
        Err(e) => run_error(e),
    }
}

fn cmd_tell(
    target: &Path,
    trial: u64,
    metrics: &[String],
    progression: Option<f64>,
    failed: Option<String>,
    abandon: Option<String>,
    line: &str,
) -> i32 {
    let values = match reported(metrics) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let what = match (progression, failed, abandon) {
        (Some(p), _, _) => scheduler::Tell::Point { progression: p, values },
        (_, Some(why), _) => scheduler::Tell::Failed(why),
        (_, _, Some(why)) => scheduler::Tell::Abandon(why),
        _ => scheduler::Tell::Results(values),
    };
    let (mut store, spec, _, session) = match act_on(target, line) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let told = scheduler::tell(&spec, store.as_mut(), trial, &what);
    let _ = store.leave(session, Some(if told.is_ok() { 0 } else { 2 }));
    match told {
        Ok(scheduler::Told::Point) => {
            outln!("continue");
            EXIT_OK
        }
        Ok(scheduler::Told::Stop(reason)) => {
            outln!("stop");
            eprintln!("optx: trial {trial}: {reason}");
            EXIT_OK
        }
        Ok(scheduler::Told::Completed { feasible }) => {
            let note = if feasible { "" } else { " (infeasible)" };
            outln!("optx: trial {trial} completed{note}");
            EXIT_OK
        }
        Ok(scheduler::Told::Failed) => {
            outln!("optx: trial {trial} failed");
            EXIT_OK
        }
        Ok(scheduler::Told::Abandoned) => {
            outln!("optx: trial {trial} abandoned");
            EXIT_OK
        }
        Err(e) => run_error(e),
    }
}

fn cmd_attach(target: &Path, params: &[String], results: &[String], line: &str) -> i32 {
    let (given, results) = match (pairs(params, "each parameter"), reported(results)) {
        (Ok(g), Ok(r)) => (g, r),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let (mut store, spec, _, session) = match act_on(target, line) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let done = scheduler::arm_of(&spec, &given).and_then(|arm| {
        let r = (!results.is_empty()).then_some(results.as_slice());
        scheduler::attach(&spec, store.as_mut(), session, &arm, r)
    });
    let _ = store.leave(session, Some(if done.is_ok() { 0 } else { 2 }));
    match done {
        Ok((a, told)) => {
            let how = if told.is_some() { "attached and completed" } else { "attached, running: tell its results" };
            outln!("optx: trial {} {how}: {}", a.index, report::params_inline(&a.parameters));
            EXIT_OK
        }
        Err(e) => run_error(e),
    }
}

fn cmd_clean(target: &Path, dry_run: bool, line: &str) -> i32 {
    let exe = match exe() {
        Ok(e) => e,
        Err(c) => return c,
    };
    // A dry run only reads: it joins as nobody (joining marks the dead workers).
    let (mut store, spec, seed, session) = if dry_run {
        let (store, spec, _) = match open_target(target) {
            Ok(x) => x,
            Err(c) => return c,
        };
        let seed = store.experiment().ok().flatten().map_or(0, |e| e.seed);
        (store, spec, seed, -1)
    } else {
        match act_on(target, line) {
            Ok(x) => x,
            Err(c) => return c,
        }
    };
    let done = scheduler::clean(&spec, store.as_mut(), session, seed, &exe, dry_run);
    if !dry_run {
        let _ = store.leave(session, Some(if done.is_ok() { 0 } else { 1 }));
    }
    match done {
        Ok(lines) => {
            for l in lines {
                outln!("optx: {l}");
            }
            EXIT_OK
        }
        Err(e) => run_error(e),
    }
}

fn cmd_backup(target: &Path, dest: &Path) -> i32 {
    let (store, _, path) = match open_target(target) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let code = |e: &crate::store::StoreError| match e {
        crate::store::StoreError::Unusable(_) => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    };
    let dest = match location(dest) {
        d @ StoreLocation::File(_) => d,
        // Into a server database: under the experiment's name unless the URL names another.
        d => match store.experiment() {
            Ok(Some(e)) => d.for_experiment(&e.name),
            _ => d,
        },
    };
    if let Err(e) = store::copy(store.as_ref(), &dest) {
        return fail(code(&e), e);
    }
    match store::open_read(&dest).and_then(|b| b.trial_counts()) {
        Ok((n, _)) => {
            outln!("optx: copied {path} ({n} trials) to {dest}");
            EXIT_OK
        }
        Err(e) => fail(EXIT_RUNTIME, format!("the copy {dest} cannot be read back: {e}")),
    }
}

fn cmd_validate(file: &Path) -> i32 {
    let (spec, _) = match load(file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    use crate::domain::{Domain, RunnerSpec, Segment};
    let plugins = match crate::runners::plugin::check_all(&spec) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return EXIT_USAGE;
        }
    };
    if let RunnerSpec::Command(c) = &spec.runner {
        if let Err(e) = crate::runners::program::check_program(c, &spec.base_dir) {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "{}: ok", file.display());
    let _ = writeln!(out, "experiment:  {}", spec.name);
    let _ = writeln!(out, "objective:   {}", spec.goal.describe());
    if !spec.goal.thresholds.is_empty() {
        let t: Vec<String> = spec.goal.thresholds.iter().map(|t| t.to_string()).collect();
        let _ = writeln!(out, "thresholds:  {}", t.join(", "));
    }
    let _ = writeln!(out, "parameters:  {} searched dimension(s)", spec.space.dims());
    let w = spec.space.parameters.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &spec.space.parameters {
        let d = match &p.domain {
            Domain::Float { lo, hi, log, step, digits } => format!(
                "float [{lo}, {hi}]{}{}",
                if *log { " log" } else { "" },
                match step {
                    Some(s) => format!(" step {s}"),
                    None => format!(" ({digits} significant digits)"),
                }
            ),
            Domain::Int { lo, hi, log, step } => format!(
                "int [{lo}, {hi}]{}{}",
                if *log { " log" } else { "" },
                step.map(|s| format!(" step {s}")).unwrap_or_default()
            ),
            Domain::Choice { values, ordered } => format!(
                "{}choice {{{}}}",
                if *ordered { "ordered " } else { "" },
                values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Domain::Fixed { value } => format!("fixed {value}"),
        };
        let _ = writeln!(out, "  {:w$}  {d}", p.name);
    }
    for c in &spec.space.constraints {
        let _ = writeln!(out, "constraint:  {}", c.text);
    }
    for c in &spec.outcome_constraints {
        let _ = writeln!(out, "outcome:     {c}");
    }
    match &spec.runner {
        RunnerSpec::Command(c) => {
            let words: Vec<String> = c
                .argv
                .iter()
                .map(|t| {
                    t.segments
                        .iter()
                        .map(|s| match s {
                            Segment::Literal(l) => l.clone(),
                            Segment::Placeholder(p) => format!("{{{p}}}"),
                        })
                        .collect()
                })
                .collect();
            let shell = if c.shell { " (through sh -c)" } else { "" };
            let _ = writeln!(out, "runner:      command{shell}: {}", words.join(" "));
        }
        RunnerSpec::Plugin(p) => {
            let _ = writeln!(out, "runner:      plugin `{}` in {}", p.plugin.name, p.plugin.library.display());
        }
        RunnerSpec::External(e) => {
            let what = match &e.system {
                crate::domain::JobSystem::Slurm { .. } => "slurm: sbatch, one squeue per poll, scancel",
                crate::domain::JobSystem::Commands { status_all: Some(_), .. } => {
                    "external: submit, status_all, cancel"
                }
                crate::domain::JobSystem::Commands { .. } => "external: submit, status, cancel",
            };
            let _ = writeln!(out, "runner:      {what}");
        }
    }
    for line in &plugins {
        let _ = writeln!(out, "plugin:      {line}");
    }
    let o = &spec.orchestration;
    let _ = writeln!(out, "trials:      {} (parallelism {})", o.max_trials, o.parallelism);
    let _ = writeln!(out, "generation:  {}", Generator::describe(&spec));
    if let Some(n) = spec.space.cardinality() {
        let _ = writeln!(out, "space:       {n} distinct arms");
    }
    let _ = writeln!(out, "store:       {}", spec.store);
    out!("{out}");
    EXIT_OK
}
