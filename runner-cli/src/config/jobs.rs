//! `[runner] kind = "external"` and its preset `kind = "slurm"`: jobs on another system,
//! submitted, polled and cancelled through commands.

use std::path::Path;

use toml::de::DeValue;

use super::walk::{Ctx, Table};
use super::{as_str, kind, read_argv, template_with, RESERVED_PLACEHOLDERS};
use crate::domain::{ExternalSpec, JobSystem, JobWord, KeepTrialDirs, RunnerSpec, SearchSpace, Template};

/// Keys of both kinds, beside their own.
pub(super) const SHARED_KEYS: [&str; 5] = ["shell", "env", "workdir", "keep_trial_dirs", "progression"];

const WORDS: [(&str, JobWord); 6] = [
    ("staged", JobWord::Staged),
    ("running", JobWord::Running),
    ("completed", JobWord::Completed),
    ("failed", JobWord::Failed),
    ("abandoned", JobWord::Abandoned),
    ("lost", JobWord::Lost),
];

/// The words a status command may print without a `status_map`: optx's own, and those of
/// common queues (Slurm, Kubernetes, AWS Batch, Katib). A `status_map` adds to them and
/// wins over them.
pub const DEFAULT_STATUS_WORDS: [(&str, JobWord); 20] = [
    ("staged", JobWord::Staged),
    ("pending", JobWord::Staged),
    ("queued", JobWord::Staged),
    ("submitted", JobWord::Staged),
    ("running", JobWord::Running),
    ("started", JobWord::Running),
    ("completed", JobWord::Completed),
    ("succeeded", JobWord::Completed),
    ("success", JobWord::Completed),
    ("done", JobWord::Completed),
    ("failed", JobWord::Failed),
    ("error", JobWord::Failed),
    ("timeout", JobWord::Failed),
    ("abandoned", JobWord::Abandoned),
    ("cancelled", JobWord::Abandoned),
    ("canceled", JobWord::Abandoned),
    ("lost", JobWord::Lost),
    ("preempted", JobWord::Lost),
    ("node_fail", JobWord::Lost),
    ("boot_fail", JobWord::Lost),
];

pub(super) fn read_external_runner(
    ctx: &mut Ctx,
    t: &Table,
    space: &SearchSpace,
    base: &Path,
    kind_s: &str,
) -> Option<RunnerSpec> {
    super::check_runner_keys(ctx, t, kind_s);
    let names: Vec<&str> = space.parameters.iter().map(|p| p.name.as_str()).collect();
    let trial: Vec<&str> = names.iter().copied().chain(RESERVED_PLACEHOLDERS).collect();
    let one: Vec<&str> = trial.iter().copied().chain(["job_id"]).collect();
    let all: Vec<&str> = ["experiment", "job_ids"].into();
    let shell = t.bool(ctx, "shell").unwrap_or(false);
    let command = |ctx: &mut Ctx, key: &str, placeholders: &[&str]| -> Option<Option<Vec<Template>>> {
        match t.get(key) {
            None => Some(None),
            Some(v) => read_argv(ctx, v, &format!("runner.{key}"), shell, placeholders).map(Some),
        }
    };
    let system = if kind_s == "slurm" {
        let script = match t.get("script") {
            Some(v) => {
                let s = as_str(ctx, v, "runner.script")?;
                let t = template_with(ctx, s, v.span(), "runner.script", &trial)?;
                Some(t)
            }
            None => None,
        };
        let command = command(ctx, "command", &trial)?;
        if script.is_some() == command.is_some() {
            ctx.err(
                t.span.clone(),
                "`[runner] kind = \"slurm\"` needs `script` (a batch script for sbatch) or `command` (run by `sbatch --wrap`), one of them",
            );
            return None;
        }
        let mut sbatch_args = Vec::new();
        if let Some(v) = t.get("sbatch_args") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items {
                        let s = as_str(ctx, item, "runner.sbatch_args")?;
                        sbatch_args.push(template_with(ctx, s, item.span(), "runner.sbatch_args", &trial)?);
                    }
                }
                other => {
                    ctx.err(
                        v.span(),
                        format!(
                            "`runner.sbatch_args` must be an array of strings, like [\"--gres=gpu:1\"], not {}",
                            kind(other)
                        ),
                    );
                    return None;
                }
            }
        }
        let _ = base;
        JobSystem::Slurm { script, command, sbatch_args }
    } else {
        let submit = match t.get("submit") {
            Some(_) => command(ctx, "submit", &trial)?,
            None => {
                t.require(ctx, "submit")?;
                None
            }
        };
        let status = command(ctx, "status", &one)?;
        let status_all = command(ctx, "status_all", &all)?;
        let cancel = command(ctx, "cancel", &one)?;
        if status.is_none() && status_all.is_none() {
            ctx.err(
                t.span.clone(),
                "`[runner] kind = \"external\"` needs `status` (one job: `{job_id}`) or `status_all` (every live job at once: `{job_ids}`)",
            );
            return None;
        }
        let mut status_map = Vec::new();
        if let Some(v) = t.get("status_map") {
            let m = Table::of(ctx, "runner.status_map", v)?;
            for (word, span, v) in &m.entries {
                let Some(to) = as_str(ctx, v, &format!("runner.status_map.{word}")) else { continue };
                match WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(to)) {
                    Some((_, jw)) => status_map.push((word.to_lowercase(), *jw)),
                    None => ctx.err(
                        span.clone(),
                        format!(
                            "`runner.status_map.{word}` must be one of staged, running, completed, failed, abandoned, lost, not \"{to}\""
                        ),
                    ),
                }
            }
        }
        let job_id_regex = match t.get("job_id_regex") {
            None => regex::Regex::new(r"^\s*(\S+)").ok()?,
            Some(v) => {
                let s = as_str(ctx, v, "runner.job_id_regex")?;
                match regex::Regex::new(s) {
                    Ok(r) => r,
                    Err(e) => {
                        let msg = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                        ctx.err(v.span(), format!("`runner.job_id_regex` is not a valid regular expression: {msg}"));
                        return None;
                    }
                }
            }
        };
        JobSystem::Commands { submit: submit?, status, status_all, status_map, cancel, job_id_regex }
    };
    let mut env = Vec::new();
    if let Some(ev) = t.get("env") {
        let et = Table::of(ctx, "runner.env", ev)?;
        for (k, _, v) in &et.entries {
            let Some(s) = as_str(ctx, v, &format!("runner.env.{k}")) else { continue };
            if let Some(tp) = template_with(ctx, s, v.span(), &format!("runner.env.{k}"), &trial) {
                env.push((k.to_string(), tp));
            }
        }
    }
    let workdir = match t.get("workdir") {
        Some(v) => {
            let s = as_str(ctx, v, "runner.workdir")?;
            Some(template_with(ctx, s, v.span(), "runner.workdir", &trial)?)
        }
        None => None,
    };
    let keep_trial_dirs = match t.one_of(ctx, "keep_trial_dirs", &["all", "failed", "none"]) {
        Some("failed") => KeepTrialDirs::Failed,
        Some("none") => KeepTrialDirs::None,
        _ => KeepTrialDirs::All,
    };
    let progression = t.str(ctx, "progression").unwrap_or("step").to_string();
    Some(RunnerSpec::External(ExternalSpec { system, shell, env, workdir, keep_trial_dirs, progression }))
}
