//! `kind = "slurm"`: sbatch to submit (a job array for a batch), one `squeue` per round for
//! the live jobs and at most one more call for those that left it (`sacct`, or `scontrol`
//! when accounting is off), `scancel` for all the stopped jobs at once. Slurm limits the
//! requests of a user per second; optx makes at most two per round, whatever the jobs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::shell_out::{self, Ran};
use super::{job_id, ExternalBackend, STATUS_TIMEOUT, SUBMIT_TIMEOUT};
use crate::domain::{shell_quote, JobSystem, ShellQuote};
use crate::runners::driver::{Answers, JobState, Live, PollError, Submitted};
use crate::runners::tail::Tail;
use crate::runners::{TrialJob, Unstarted};

/// Whether Slurm keeps accounting (`sacct`): not known yet, yes, no.
pub(super) const ACCOUNTING_UNKNOWN: u8 = 0;
const ACCOUNTING_ON: u8 = 1;
const ACCOUNTING_OFF: u8 = 2;

fn accounting_off(r: &Ran) -> bool {
    r.stderr.contains("accounting storage is disabled") || r.stdout.contains("accounting storage is disabled")
}

/// The job name of a trial: its store and index, so that a resume can find a job whose
/// submission optx did not live to record.
fn job_name(job: &TrialJob) -> String {
    let token: String = job.token.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("optx-{token}")
}

/// `job.sh` in the trial dir: the trial's environment, its working directory and its
/// command, for `sbatch --wrap` (and for each task of a job array).
fn job_script(b: &ExternalBackend, job: &TrialJob) -> std::io::Result<String> {
    let JobSystem::Slurm { script, command, .. } = &b.spec.system else { unreachable!("a slurm runner") };
    let q = |s: &str| shell_quote(s, ShellQuote::Bare);
    let mut text = String::from("#!/bin/sh\n# written by optx: the trial's environment and command\n");
    for (k, v) in b.env(job) {
        text.push_str(&format!("export {k}={}\n", q(&v)));
    }
    text.push_str(&format!("cd {} || exit 1\n", q(&b.cwd(job).to_string_lossy())));
    match (script, command) {
        (Some(s), _) => {
            let path = b.base_dir.join(b.render(s, job, None, false));
            text.push_str(&format!("exec sh {}\n", q(&path.to_string_lossy())));
        }
        (None, Some(words)) if b.spec.shell => {
            let line = words.iter().map(|t| b.render(t, job, None, true)).collect::<Vec<_>>().join(" ");
            text.push_str(&format!("exec sh -c {}\n", q(&line)));
        }
        (None, Some(words)) => {
            let argv: Vec<String> = words.iter().map(|t| q(&b.render(t, job, None, false))).collect();
            text.push_str(&format!("exec {}\n", argv.join(" ")));
        }
        (None, None) => {}
    }
    let path = job.trial_dir.join("job.sh");
    std::fs::write(&path, &text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Submit `jobs`: one `sbatch` for one job, one job array for several (its task ids are
/// the trials' indices). Run metadata: `job_id` (`<array>_<index>` in an array).
pub(super) fn submit(b: &ExternalBackend, jobs: &[TrialJob]) -> Vec<Submitted> {
    let JobSystem::Slurm { script, sbatch_args, .. } = &b.spec.system else { unreachable!("a slurm runner") };
    let Some(first) = jobs.first() else { return Vec::new() };
    let refuse = |why: String| jobs.iter().map(|_| Submitted::Refused(why.clone(), false)).collect::<Vec<_>>();
    let mut argv: Vec<String> = vec!["sbatch".into(), "--parsable".into()];
    let array = jobs.len() > 1;
    if array {
        let root = b.trials_root.to_string_lossy().into_owned();
        for job in jobs {
            if let Err(e) = job_script(b, job) {
                return refuse(format!("cannot write job.sh in the trial dir: {e}"));
            }
        }
        let ids: Vec<String> = jobs.iter().map(|j| j.index.to_string()).collect();
        argv.push(format!("--array={}", ids.join(",")));
        argv.push(format!("--job-name=optx-batch-{}", job_name(first)));
        argv.push(format!("--output={root}/%a/stdout.log"));
        argv.push(format!("--error={root}/%a/stderr.log"));
        argv.extend(sbatch_args.iter().map(|t| b.render(t, first, None, false)));
        let task = shell_quote(&format!("{root}/"), ShellQuote::Bare);
        argv.push(format!("--wrap=exec sh {task}\"$SLURM_ARRAY_TASK_ID\"/job.sh"));
    } else {
        let dir = first.trial_dir.to_string_lossy().into_owned();
        argv.push(format!("--job-name={}", job_name(first)));
        argv.push(format!("--output={dir}/stdout.log"));
        argv.push(format!("--error={dir}/stderr.log"));
        argv.push(format!("--chdir={}", b.cwd(first).to_string_lossy()));
        argv.extend(sbatch_args.iter().map(|t| b.render(t, first, None, false)));
        match script {
            // The user's batch script itself, so that its #SBATCH lines count; it sees the
            // trial's variables through sbatch's environment.
            Some(s) => argv.push(b.base_dir.join(b.render(s, first, None, false)).to_string_lossy().into_owned()),
            None => match job_script(b, first) {
                Ok(path) => argv.push(format!("--wrap=exec sh {}", shell_quote(&path, ShellQuote::Bare))),
                Err(e) => return refuse(format!("cannot write job.sh in the trial dir: {e}")),
            },
        }
    }
    let env = if array { Vec::new() } else { b.env(first) };
    let ran = match shell_out::run(&argv, &env, &b.cwd(first), &first.trial_dir, "submit", SUBMIT_TIMEOUT) {
        Ok(r) => r,
        Err(e) => return refuse(format!("sbatch failed: {e}")),
    };
    if !ran.success() {
        return refuse(format!("sbatch refused the job ({})", ran.failure()));
    }
    // `--parsable`: `<id>` or `<id>;<cluster>`.
    let id = ran.stdout.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return refuse(format!("sbatch printed no job id: {:?}", ran.stdout.trim()));
    }
    tracing::debug!(job = %id, trials = jobs.len(), "sbatch: submitted");
    jobs.iter()
        .map(|j| {
            let job_id = if array { format!("{id}_{}", j.index) } else { id.clone() };
            Submitted::Job(json!({"job_id": job_id, "trial_dir": j.trial_dir, "job_name": job_name(j)}))
        })
        .collect()
}

/// A job state word of Slurm, for a job that squeue still lists.
fn live_state(word: &str) -> Option<JobState> {
    match word {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            Some(JobState::Staged)
        }
        // COMPLETING is not here: its batch script has ended (its exit code is known), Slurm
        // is only cleaning up; it is read as ended, not waited for.
        "RUNNING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => Some(JobState::Running),
        _ => None,
    }
}

/// `3:0` (exit code 3) or `0:9` (signal 9), as sacct and scontrol write them.
fn exit_of(code: &str) -> String {
    let (c, s) = code.split_once(':').unwrap_or((code, "0"));
    match (c.trim(), s.trim()) {
        (_, s) if s != "0" && !s.is_empty() => format!("killed by signal {s}"),
        (c, _) => format!("exit code {c}"),
    }
}

/// The end of a job that left squeue, from its final state word and exit code.
fn ended_state(id: &str, word: &str, code: &str, reason: &str) -> JobState {
    let word = word.split_whitespace().next().unwrap_or(word);
    let why = if reason.is_empty() || reason == "None" { String::new() } else { format!(", reason {reason}") };
    let ok = exit_of(code) == "exit code 0";
    match word {
        "COMPLETED" => JobState::Completed,
        "COMPLETING" if ok => JobState::Completed,
        "COMPLETING" => JobState::Failed(format!("Slurm job {id} FAILED ({}){why}", exit_of(code))),
        "CANCELLED" => JobState::Failed(format!(
            "Slurm job {id} was CANCELLED outside optx (scancel by hand, or an administrator){why}"
        )),
        "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL" => {
            JobState::Lost(format!("Slurm job {id} ended {word}{why}: not the trial's fault, it runs again"))
        }
        w => JobState::Failed(format!("Slurm job {id} {w} ({}){why}", exit_of(code))),
    }
}

fn run(b: &ExternalBackend, argv: &[&str], name: &str) -> Result<Ran, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    shell_out::run(&argv, &[], &b.base_dir, &b.status_dir(), name, STATUS_TIMEOUT)
}

/// `scontrol -o show job`: every job the controller still remembers, by id
/// (`<array>_<task>` for a task of an array): (state, exit code, reason, name).
fn scontrol_jobs(b: &ExternalBackend) -> Result<HashMap<String, [String; 4]>, String> {
    let r = run(b, &["scontrol", "-o", "show", "job"], "scontrol")?;
    if !r.success() {
        // No jobs at all is no error.
        if r.stdout.trim().is_empty() && r.stderr.contains("No jobs") {
            return Ok(HashMap::new());
        }
        return Err(format!("scontrol failed ({})", r.failure()));
    }
    let mut out = HashMap::new();
    for line in r.stdout.lines() {
        let mut f: HashMap<&str, &str> = HashMap::new();
        for word in line.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                f.entry(k).or_insert(v);
            }
        }
        let id = match (f.get("ArrayJobId"), f.get("ArrayTaskId")) {
            (Some(a), Some(t)) => format!("{a}_{t}"),
            _ => f.get("JobId").copied().unwrap_or_default().to_string(),
        };
        let get = |k: &str| f.get(k).copied().unwrap_or_default().to_string();
        out.insert(id, [get("JobState"), get("ExitCode"), get("Reason"), get("JobName")]);
    }
    Ok(out)
}

/// One `squeue` for the live jobs; one `sacct` (or `scontrol`) for those that left it.
pub(super) fn poll(b: &ExternalBackend, jobs: &[&Live<Tail>]) -> Result<Answers, PollError> {
    let by_id: HashMap<&str, (u64, &Live<Tail>)> =
        jobs.iter().filter_map(|l| Some((job_id(&l.meta)?, (l.job.index, *l)))).collect();
    let mut out: Answers = jobs
        .iter()
        .filter(|l| job_id(&l.meta).is_none())
        .map(|l| (l.job.index, Err("its run metadata holds no Slurm job id".to_string())))
        .collect();
    if by_id.is_empty() {
        return Ok(out);
    }
    let ids: Vec<&str> = by_id.keys().copied().collect();
    let list = ids.join(",");
    let r = run(b, &["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", &list], "squeue")
        .map_err(|e| PollError::Retry(format!("squeue failed: {e}")))?;
    // squeue fails when none of the ids is known any more: then they all left it.
    if !r.success() && !r.stderr.contains("Invalid job id") {
        return Err(PollError::Retry(format!("squeue failed ({})", r.failure())));
    }
    let mut gone: Vec<&str> = Vec::new();
    let mut listed: HashMap<&str, JobState> = HashMap::new();
    for line in r.stdout.lines() {
        let mut parts = line.splitn(3, '|');
        let (Some(id), Some(word)) = (parts.next(), parts.next()) else { continue };
        if let (Some((id, _)), Some(s)) = (by_id.get_key_value(id.trim()), live_state(word.trim())) {
            listed.insert(id, s);
        }
    }
    for id in &ids {
        match listed.remove(id) {
            Some(s) => out.push((by_id[id].0, Ok(s))),
            None => gone.push(id),
        }
    }
    let accounting = b.accounting.load(Ordering::Relaxed);
    if gone.is_empty() {
        if accounting == ACCOUNTING_UNKNOWN {
            // A round with one call so far: learn whether sacct works, so that the round in
            // which jobs first leave the queue asks the right command.
            if let Ok(r) = run(b, &["sacct", "-n", "-X", "-P", "-o", "JobID", "-j", &list], "sacct") {
                let known = if r.success() {
                    ACCOUNTING_ON
                } else if accounting_off(&r) {
                    ACCOUNTING_OFF
                } else {
                    ACCOUNTING_UNKNOWN
                };
                b.accounting.store(known, Ordering::Relaxed);
            }
        }
        return Ok(out);
    }
    // The jobs that left squeue: how they ended, from one more call.
    let mut ended: HashMap<String, [String; 4]> = HashMap::new();
    if accounting == ACCOUNTING_OFF {
        ended = scontrol_jobs(b).map_err(PollError::Retry)?;
    } else {
        let list = gone.join(",");
        match run(b, &["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", &list], "sacct") {
            Ok(r) if r.success() => {
                b.accounting.store(ACCOUNTING_ON, Ordering::Relaxed);
                for line in r.stdout.lines() {
                    let f: Vec<&str> = line.split('|').collect();
                    if let [id, state, code, ..] = f.as_slice() {
                        ended.insert(
                            id.to_string(),
                            [state.to_string(), code.to_string(), String::new(), String::new()],
                        );
                    }
                }
            }
            Ok(r) if accounting_off(&r) => {
                tracing::debug!("sacct: accounting is off; scontrol is asked from now on");
                b.accounting.store(ACCOUNTING_OFF, Ordering::Relaxed);
                // At most two calls per round: scontrol is asked at the next one.
                return Ok(out);
            }
            Ok(r) => return Err(PollError::Retry(format!("sacct failed ({})", r.failure()))),
            Err(e) => return Err(PollError::Retry(format!("sacct failed: {e}"))),
        }
    }
    for id in gone {
        let (index, live) = by_id[id];
        let state = match ended.get(id) {
            Some([state, code, reason, _]) if live_state(state).is_some() => {
                // Still live after all (it moved between the two calls).
                let _ = (code, reason);
                live_state(state).unwrap_or(JobState::Running)
            }
            Some([state, code, reason, _]) => ended_state(id, state, code, reason),
            None if live.job.trial_dir.join("result.json").exists() => JobState::Completed,
            None => JobState::Lost(format!(
                "Slurm has no record of job {id} any more (it ended longer ago than the controller remembers, and accounting is off) and it left no result.json: its outcome is unknown"
            )),
        };
        out.push((index, Ok(state)));
    }
    Ok(out)
}

/// One `scancel` for every job stopped at once.
pub(super) fn cancel(b: &ExternalBackend, jobs: &[(&Live<Tail>, &str)]) -> Vec<Option<Value>> {
    let ids: Vec<&str> = jobs.iter().filter_map(|(l, _)| job_id(&l.meta)).collect();
    let mut argv = vec!["scancel"];
    argv.extend(ids.iter().copied());
    let how = match run(b, &argv, "scancel") {
        Ok(r) if r.success() => json!({"scancel": ids}),
        Ok(r) => json!({"error": format!("scancel failed ({})", r.failure())}),
        Err(e) => json!({"error": format!("scancel failed: {e}")}),
    };
    vec![Some(how); jobs.len()]
}

/// A trial whose submission began but was not recorded: its job, by its name, if Slurm
/// has one (so that it is followed, not submitted twice).
pub(super) fn find(b: &ExternalBackend, job: &TrialJob) -> Unstarted {
    let name = job_name(job);
    let meta = |id: &str| json!({"job_id": id, "trial_dir": job.trial_dir, "job_name": name});
    match run(b, &["squeue", "-h", "-r", "-o", "%i", "-n", &name], "squeue") {
        Ok(r) if r.success() => {
            if let Some(id) = r.stdout.split_whitespace().next() {
                return Unstarted::Started(meta(id));
            }
        }
        Ok(r) => {
            return Unstarted::Unknown(format!(
                "squeue failed ({}): whether sbatch took it cannot be told",
                r.failure()
            ))
        }
        Err(e) => return Unstarted::Unknown(format!("squeue failed ({e}): whether sbatch took it cannot be told")),
    }
    match scontrol_jobs(b) {
        Ok(all) => match all.iter().find(|(_, f)| f[3] == name) {
            Some((id, _)) => Unstarted::Started(meta(id)),
            None => Unstarted::Never,
        },
        Err(e) => Unstarted::Unknown(format!("{e}: whether sbatch took it cannot be told")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_and_exit_codes() {
        assert_eq!(ended_state("7", "COMPLETED", "0:0", "None"), JobState::Completed);
        assert_eq!(
            ended_state("7", "FAILED", "3:0", "NonZeroExitCode"),
            JobState::Failed("Slurm job 7 FAILED (exit code 3), reason NonZeroExitCode".into())
        );
        assert_eq!(
            ended_state("7", "TIMEOUT", "0:15", ""),
            JobState::Failed("Slurm job 7 TIMEOUT (killed by signal 15)".into())
        );
        assert!(
            matches!(ended_state("7", "CANCELLED by 0", "0:15", ""), JobState::Failed(r) if r.contains("CANCELLED outside optx"))
        );
        for w in ["PREEMPTED", "NODE_FAIL", "BOOT_FAIL"] {
            assert!(matches!(ended_state("7", w, "0:0", ""), JobState::Lost(_)), "{w}");
        }
        assert_eq!(live_state("PENDING"), Some(JobState::Staged));
        assert_eq!(live_state("COMPLETING"), None);
        assert_eq!(ended_state("7", "COMPLETING", "0:0", ""), JobState::Completed);
        assert_eq!(
            ended_state("7", "COMPLETING", "2:0", ""),
            JobState::Failed("Slurm job 7 FAILED (exit code 2)".into())
        );
        assert_eq!(live_state("COMPLETED"), None);
    }
}
