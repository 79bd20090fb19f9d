//! `[runner] kind = "external"` and `kind = "slurm"`: trials as jobs of another system,
//! submitted by a command on a worker, then followed by the job driver: the status of
//! every live job per round (one `status_all`, or one `squeue` and at most one `scontrol`
//! or `sacct` call for Slurm), their learning curves from the `stdout.log` of their trial
//! dirs, cancels, and their results read with the output protocol from their trial dirs.
//! The jobs outlive optx: their run metadata holds the job id, by which a resume finds them.

mod shell_out;
mod slurm;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

use super::driver::{ended_without_results, Answers, Backend, Driver, JobState, Live, PollError, Submitted};
use super::output::{read_result_files, OutputParser};
use super::tail::Tail;
use super::verdict::verdict;
use super::{Control, MetricPoint, PluginMetrics, PollSchedule, RunnerEvent, TrialJob, TrialResult, Unstarted};
use crate::domain::{ExperimentSpec, ExternalSpec, JobSystem, JobWord, MetricRule, RunnerSpec, Template};

/// A submit command that runs longer than this fails its trial.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// A status or cancel command that runs longer than this is a failed round (retried).
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

/// The external runner: an [`ExternalBackend`] followed by the job driver.
pub type ExternalRunner = Driver<ExternalBackend>;

pub fn external_runner(
    spec: &ExperimentSpec,
    polls: PollSchedule,
    metrics: PluginMetrics,
) -> Result<ExternalRunner, String> {
    let ttl = spec.orchestration.ttl_seconds_for_trials.map(Duration::from_secs_f64);
    Ok(Driver::new(ExternalBackend::new(spec, metrics)?, polls, ttl))
}

pub struct ExternalBackend {
    spec: ExternalSpec,
    metrics: BTreeMap<String, MetricRule>,
    required: Vec<String>,
    experiment: String,
    base_dir: PathBuf,
    trials_root: PathBuf,
    plugin_metrics: PluginMetrics,
    /// Slurm: whether `sacct` works (`ACCOUNTING_*`); when accounting is off, `scontrol`
    /// is asked instead.
    accounting: AtomicU8,
}

impl ExternalBackend {
    fn new(spec: &ExperimentSpec, plugin_metrics: PluginMetrics) -> Result<Self, String> {
        let RunnerSpec::External(e) = &spec.runner else { return Err("not an external runner".into()) };
        Ok(ExternalBackend {
            spec: e.clone(),
            metrics: spec.metrics.clone(),
            required: spec.required_metrics().into_iter().map(str::to_string).collect(),
            experiment: spec.name.clone(),
            base_dir: spec.base_dir.clone(),
            trials_root: spec.trials_root(),
            plugin_metrics,
            accounting: AtomicU8::new(slurm::ACCOUNTING_UNKNOWN),
        })
    }

    fn slurm(&self) -> bool {
        matches!(self.spec.system, JobSystem::Slurm { .. })
    }

    /// A template with a trial's values (shell-quoted for `sh -c` when `quote`).
    fn render(&self, t: &Template, job: &TrialJob, job_id: Option<&str>, quote: bool) -> String {
        let quoting = if quote { crate::domain::shell_quoting(t).unwrap_or_default() } else { Vec::new() };
        t.render_nth(&|n, name| {
            let raw = match name {
                "job_id" => job_id.unwrap_or_default().to_string(),
                name => super::placeholder(job, &self.experiment, name),
            };
            match quoting.get(n) {
                Some(q) => crate::domain::shell_quote(&raw, *q),
                None => raw,
            }
        })
    }

    /// The argv of a command of the spec for one trial.
    fn argv(&self, words: &[Template], job: &TrialJob, job_id: Option<&str>) -> Vec<String> {
        if self.spec.shell {
            let script = words.iter().map(|t| self.render(t, job, job_id, true)).collect::<Vec<_>>().join(" ");
            vec!["sh".into(), "-c".into(), script]
        } else {
            words.iter().map(|t| self.render(t, job, job_id, false)).collect()
        }
    }

    /// The argv of `status_all` for these job ids: a word that is `{job_ids}` alone becomes
    /// one argument per id; inside a word (`--jobs={job_ids}`) they are comma-joined; for
    /// `sh -c`, space-joined and quoted.
    fn argv_all(&self, words: &[Template], ids: &[&str]) -> Vec<String> {
        use crate::domain::Segment;
        let value = |name: &str, sep: &str, quote: bool| match name {
            "job_ids" if quote => ids
                .iter()
                .map(|i| crate::domain::shell_quote(i, crate::domain::ShellQuote::Bare))
                .collect::<Vec<_>>()
                .join(" "),
            "job_ids" => ids.join(sep),
            _ => self.experiment.clone(),
        };
        if self.spec.shell {
            let script = words.iter().map(|t| t.render(&|n| value(n, " ", true))).collect::<Vec<_>>().join(" ");
            return vec!["sh".into(), "-c".into(), script];
        }
        let mut argv = Vec::new();
        for t in words {
            match t.segments.as_slice() {
                [Segment::Placeholder(p)] if p == "job_ids" => argv.extend(ids.iter().map(|s| s.to_string())),
                _ => argv.push(t.render(&|n| value(n, ",", false))),
            }
        }
        argv
    }

    /// What a trial's job sees: optx's variables for the trial, and the runner's `env`.
    fn env(&self, job: &TrialJob) -> Vec<(String, String)> {
        let mut env = super::trial_env(job, &self.experiment);
        for (k, t) in &self.spec.env {
            env.push((k.clone(), self.render(t, job, None, false)));
        }
        env
    }

    fn cwd(&self, job: &TrialJob) -> PathBuf {
        match &self.spec.workdir {
            Some(t) => self.base_dir.join(self.render(t, job, None, false)),
            None => self.base_dir.clone(),
        }
    }

    /// Where status and cancel commands leave their output (the last one of each).
    fn status_dir(&self) -> PathBuf {
        self.trials_root.join(".jobs")
    }

    fn word(&self, word: &str) -> Option<JobWord> {
        let w = word.trim().to_lowercase();
        if let JobSystem::Commands { status_map, .. } = &self.spec.system {
            if let Some((_, jw)) = status_map.iter().find(|(k, _)| *k == w) {
                return Some(*jw);
            }
        }
        crate::config::DEFAULT_STATUS_WORDS.iter().find(|(k, _)| *k == w).map(|(_, jw)| *jw)
    }

    /// A status line's word (and what follows it) as a job state.
    fn state(&self, id: &str, word: &str, rest: &str) -> Option<JobState> {
        let said = |what: &str| match rest.trim() {
            "" => format!("the job system reports job {id} {what} ({word})"),
            r => format!("the job system reports job {id} {what} ({word}): {r}"),
        };
        Some(match self.word(word)? {
            JobWord::Staged => JobState::Staged,
            JobWord::Running => JobState::Running,
            JobWord::Completed => JobState::Completed,
            JobWord::Failed => JobState::Failed(said("failed")),
            JobWord::Abandoned => JobState::Abandoned(said("abandoned")),
            JobWord::Lost => JobState::Lost(said("lost")),
        })
    }

    fn submit_commands(&self, job: &TrialJob, submit: &[Template], regex: &regex::Regex) -> Submitted {
        let argv = self.argv(submit, job, None);
        let ran = match shell_out::run(&argv, &self.env(job), &self.cwd(job), &job.trial_dir, "submit", SUBMIT_TIMEOUT)
        {
            Ok(r) => r,
            Err(e) => return Submitted::Refused(format!("the submit command failed: {e}"), false),
        };
        if !ran.success() {
            return Submitted::Refused(format!("the submit command failed ({})", ran.failure()), false);
        }
        match regex.captures(&ran.stdout).and_then(|c| c.get(1).or_else(|| c.get(0))) {
            Some(m) => Submitted::Job(json!({"job_id": m.as_str(), "trial_dir": job.trial_dir})),
            None => Submitted::Refused(
                format!(
                    "the submit command printed no job id (job_id_regex `{}` found none in: {:?})",
                    regex.as_str(),
                    ran.stdout.trim()
                ),
                false,
            ),
        }
    }

    /// Round of `status` commands, one per job.
    fn poll_each(&self, status: &[Template], jobs: &[&Live<Tail>]) -> Result<Answers, PollError> {
        let mut out = Vec::new();
        let mut failed = None;
        for l in jobs {
            let Some(id) = job_id(&l.meta) else {
                out.push((l.job.index, Err("its run metadata holds no job id".to_string())));
                continue;
            };
            let argv = self.argv(status, &l.job, Some(id));
            match shell_out::run(&argv, &[], &self.cwd(&l.job), &self.status_dir(), "status", STATUS_TIMEOUT) {
                Ok(r) if r.success() => {
                    let text = r.stdout.trim();
                    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
                    match self.state(id, word, rest) {
                        Some(s) => out.push((l.job.index, Ok(s))),
                        None => unknown_word(id, word),
                    }
                }
                Ok(r) => failed = Some(format!("the status command for job {id} failed ({})", r.failure())),
                Err(e) => failed = Some(format!("the status command for job {id} failed: {e}")),
            }
        }
        match (failed, out.is_empty()) {
            (Some(e), true) => Err(PollError::Retry(e)),
            _ => Ok(out),
        }
    }

    /// One `status_all` for every job: a line `<job id> <word> [reason]` each.
    fn poll_all(&self, status_all: &[Template], jobs: &[&Live<Tail>]) -> Result<Answers, PollError> {
        let by_id: HashMap<&str, u64> = jobs.iter().filter_map(|l| Some((job_id(&l.meta)?, l.job.index))).collect();
        let ids: Vec<&str> = by_id.keys().copied().collect();
        let argv = self.argv_all(status_all, &ids);
        let r = shell_out::run(&argv, &[], &self.base_dir, &self.status_dir(), "status_all", STATUS_TIMEOUT)
            .map_err(|e| PollError::Retry(format!("the status_all command failed: {e}")))?;
        if !r.success() {
            return Err(PollError::Retry(format!("the status_all command failed ({})", r.failure())));
        }
        let mut out = Vec::new();
        for line in r.stdout.lines() {
            let mut words = line.split_whitespace();
            let (Some(id), Some(word)) = (words.next(), words.next()) else { continue };
            let Some(&index) = by_id.get(id) else { continue };
            let rest = words.collect::<Vec<_>>().join(" ");
            match self.state(id, word, &rest) {
                Some(s) => out.push((index, Ok(s))),
                None => unknown_word(id, word),
            }
        }
        Ok(out)
    }

    /// The last lines of a trial's stderr.log, for a failure's reason.
    fn stderr_tail(dir: &Path) -> String {
        let text = std::fs::read(dir.join("stderr.log")).map(|b| {
            let start = b.len().saturating_sub(4096);
            String::from_utf8_lossy(&b[start..]).into_owned()
        });
        let text = text.unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        match lines.len() {
            0 => String::new(),
            n => format!("; stderr ends with:\n{}", lines[n.saturating_sub(5)..].join("\n")),
        }
    }
}

fn unknown_word(id: &str, word: &str) {
    tracing::warn!(job = id, word, "the status command printed a word optx does not know: add it to runner.status_map");
}

pub(crate) fn job_id(meta: &Value) -> Option<&str> {
    meta.get("job_id").and_then(Value::as_str)
}

impl Backend for ExternalBackend {
    type Follow = Tail;

    fn name(&self) -> &str {
        if self.slurm() {
            "slurm"
        } else {
            "external"
        }
    }

    fn submit(&self, job: &TrialJob, _control: &Receiver<Control>, _events: &Sender<RunnerEvent>) -> Submitted {
        if let Err(e) = std::fs::create_dir_all(&job.trial_dir) {
            return Submitted::Refused(format!("cannot create the trial dir {}: {e}", job.trial_dir.display()), false);
        }
        let params = serde_json::to_vec_pretty(&job.arm.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(job.trial_dir.join("params.json"), params) {
            return Submitted::Refused(format!("cannot write params.json: {e}"), false);
        }
        match &self.spec.system {
            JobSystem::Commands { submit, job_id_regex, .. } => self.submit_commands(job, submit, job_id_regex),
            JobSystem::Slurm { .. } => slurm::submit(self, std::slice::from_ref(job)).pop().unwrap_or(Submitted::Ended),
        }
    }

    fn submit_batch(&self, jobs: &[TrialJob], events: &Sender<RunnerEvent>, done: &mut dyn FnMut(usize, Submitted)) {
        if !self.slurm() {
            let never = crossbeam_channel::never();
            for (k, j) in jobs.iter().enumerate() {
                done(k, self.submit(j, &never, events));
            }
            return;
        }
        let mut ready = Vec::new();
        for (k, job) in jobs.iter().enumerate() {
            let params = serde_json::to_vec_pretty(&job.arm.to_json()).unwrap_or_default();
            match std::fs::create_dir_all(&job.trial_dir)
                .and_then(|_| std::fs::write(job.trial_dir.join("params.json"), params))
            {
                Ok(()) => ready.push(k),
                Err(e) => done(
                    k,
                    Submitted::Refused(format!("cannot prepare the trial dir {}: {e}", job.trial_dir.display()), false),
                ),
            }
        }
        let batch: Vec<TrialJob> = ready.iter().map(|&k| jobs[k].clone()).collect();
        for (k, how) in ready.into_iter().zip(slurm::submit(self, &batch)) {
            done(k, how);
        }
    }

    fn follow(&self, job: &TrialJob) -> Tail {
        let parser = OutputParser::new(&self.metrics, &self.spec.progression);
        Tail::new(job.trial_dir.join("stdout.log"), parser, job.stored_points)
    }

    fn poll(&self, jobs: &[&Live<Tail>]) -> Result<Answers, PollError> {
        match &self.spec.system {
            JobSystem::Commands { status_all: Some(all), .. } => self.poll_all(all, jobs),
            JobSystem::Commands { status: Some(one), .. } => self.poll_each(one, jobs),
            JobSystem::Commands { .. } => Err(PollError::Fatal("the runner has no status command".into())),
            JobSystem::Slurm { .. } => slurm::poll(self, jobs),
        }
    }

    fn progress(&self, jobs: &mut [&mut Live<Tail>]) -> Vec<(u64, Vec<MetricPoint>)> {
        jobs.iter_mut()
            .map(|l| {
                let read = l.follow.read(false);
                (l.job.index, l.follow.curve(read))
            })
            .collect()
    }

    fn stop(&self, jobs: &[(&Live<Tail>, &str)]) -> Vec<Option<Value>> {
        match &self.spec.system {
            JobSystem::Slurm { .. } => slurm::cancel(self, jobs),
            JobSystem::Commands { cancel: None, .. } => {
                let note = json!({"note": "the runner has no cancel command: the job may still run"});
                vec![Some(note); jobs.len()]
            }
            JobSystem::Commands { cancel: Some(cancel), .. } => jobs
                .iter()
                .map(|(l, _)| {
                    let id = job_id(&l.meta).unwrap_or_default();
                    let argv = self.argv(cancel, &l.job, Some(id));
                    Some(
                        match shell_out::run(
                            &argv,
                            &[],
                            &self.cwd(&l.job),
                            &self.status_dir(),
                            "cancel",
                            STATUS_TIMEOUT,
                        ) {
                            Ok(r) if r.success() => json!({"cancelled": id}),
                            Ok(r) => json!({"error": format!("the cancel command failed ({})", r.failure())}),
                            Err(e) => json!({"error": format!("the cancel command failed: {e}")}),
                        },
                    )
                })
                .collect(),
        }
    }

    fn finish(&self, mut live: Live<Tail>, end: JobState, _events: &Sender<RunnerEvent>) -> Option<TrialResult> {
        let dir = live.job.trial_dir.clone();
        if let JobState::Failed(reason) = &end {
            return Some(TrialResult::failed(format!("{reason}{}", Self::stderr_tail(&dir)), false));
        }
        if let Some(r) = ended_without_results(&end) {
            return Some(r);
        }
        let tail = &mut live.follow;
        let read = tail.read(true);
        let mut curve = tail.curve(read);
        let mut finals: BTreeMap<String, MetricPoint> = tail.parser.last.clone();
        let mut problems = Vec::new();
        let mut results = BTreeMap::new();
        read_result_files(&dir, &self.metrics, &self.required, &mut results, &mut problems);
        self.plugin_metrics.fetch(live.job.index, &live.meta, &mut results, &mut curve, &mut problems);
        for (name, mut p) in results {
            if p.progression.is_none() {
                p.progression = finals.get(&name).and_then(|q| q.progression);
            }
            finals.insert(name, p);
        }
        let looked = "result.json, and JSON lines and name=value pairs in stdout.log, of the trial dir";
        let (outcome, note) = verdict(&self.required, &finals, &problems, looked, &|missing| {
            format!(
                "{}{}",
                super::hint::missing_metrics(&dir.join(crate::exec::STDOUT_FILE), missing),
                Self::stderr_tail(&dir)
            )
        });
        Some(TrialResult { outcome, finals: finals.into_values().collect(), curve, stop_metadata: None, note })
    }

    fn unstarted(&self, job: &TrialJob, staged: bool) -> Unstarted {
        match (staged, self.slurm()) {
            (false, _) => Unstarted::Never,
            (true, true) => slurm::find(self, job),
            (true, false) => Unstarted::Unknown(
                "optx stopped while submitting this trial: whether the job system took it cannot be told".into(),
            ),
        }
    }

    fn cleanup(&self, dir: &Path, failed: bool) {
        super::keep_or_remove(self.spec.keep_trial_dirs, dir, failed)
    }
}
