//! `[runner] kind = "command"`: a local process per trial, run by the shepherd of `exec`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{after, never, select, Receiver, Sender};

use super::output::{read_result_files, MetricPoint, OutputParser};
use super::PluginMetrics;
use super::{Control, Outcome, PollSchedule, RunnerEvent, TrialJob, TrialResult, TrialRunner};
use crate::domain::{CommandSpec, ExperimentSpec, KeepTrialDirs, MetricRule, RunnerSpec, Segment, Template};
use crate::exec::{self, ExitInfo, ProcEvent, RunInfo, Shepherd, SpawnRequest};

/// How long a new trial may run before its deployment is reported on its own.
const REPORT_DELAY: Duration = Duration::from_millis(20);

pub struct CommandRunner {
    spec: CommandSpec,
    metrics: BTreeMap<String, MetricRule>,
    required: Vec<String>,
    experiment: String,
    base_dir: PathBuf,
    polls: PollSchedule,
    /// `ttl_seconds_for_trials`: a trial running longer fails (and is stopped).
    ttl: Option<Duration>,
    shepherd: Shepherd,
    plugin_metrics: PluginMetrics,
    /// The program, found along PATH once (when the command names it literally and
    /// `env` does not change PATH), so that each spawn skips the search.
    program: Option<PathBuf>,
}

/// Follows `stdout.log` as it grows.
struct Tail {
    path: PathBuf,
    offset: u64,
    /// The line being read (bytes after the last newline).
    partial: Vec<u8>,
    /// The current line is over MAX_LINE: skip to its end.
    skipping: bool,
    parser: OutputParser,
}

/// Reads of the output are this big at most, whatever a trial prints.
const TAIL_CHUNK: usize = 64 * 1024;
/// A line longer than this is not a report: it is skipped, not buffered.
const MAX_LINE: usize = 1024 * 1024;

impl Tail {
    /// New points since the last read; at the end, also the unterminated last line.
    fn read(&mut self, at_end: bool) -> Vec<MetricPoint> {
        let mut points = Vec::new();
        let Ok(mut f) = std::fs::File::open(&self.path) else { return points };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return points;
        }
        let mut chunk = vec![0u8; TAIL_CHUNK];
        loop {
            let n = match f.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            self.feed(&chunk[..n], &mut points);
        }
        if at_end && !self.partial.is_empty() && !self.skipping {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            points.extend(self.parser.line(&line));
        }
        if at_end {
            self.partial.clear();
        }
        points
    }

    fn feed(&mut self, mut bytes: &[u8], points: &mut Vec<MetricPoint>) {
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            if !self.skipping {
                self.partial.extend_from_slice(&bytes[..nl]);
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                points.extend(self.parser.line(&line));
            }
            self.partial.clear();
            self.skipping = false;
            bytes = &bytes[nl + 1..];
        }
        if !self.skipping {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            }
        }
    }
}

/// How the wait for a process ended.
enum Waited {
    Exited(ExitInfo),
    /// The process is gone and nobody recorded how it ended.
    Gone,
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| {
        let start = b.len().saturating_sub(4096);
        String::from_utf8_lossy(&b[start..]).into_owned()
    });
    let text = text.unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl CommandRunner {
    /// A runner for `spec`, whose trials the shepherd (`exe __shepherd`) starts.
    pub fn new(
        spec: &ExperimentSpec,
        polls: PollSchedule,
        exe: &Path,
        plugin_metrics: PluginMetrics,
    ) -> std::io::Result<Self> {
        let RunnerSpec::Command(command) = &spec.runner else {
            return Err(std::io::Error::other("not a command runner"));
        };
        let shepherd = Shepherd::start(exe)?;
        let literal = match command.argv.first().map(|t| t.segments.as_slice()) {
            Some([Segment::Literal(p)]) if !command.shell => Some(p.clone()),
            _ => None,
        };
        let program = literal.filter(|_| !command.env.iter().any(|(k, _)| k == "PATH")).and_then(|p| exec::which(&p));
        Ok(CommandRunner {
            program,
            spec: command.clone(),
            metrics: spec.metrics.clone(),
            required: spec.required_metrics().into_iter().map(str::to_string).collect(),
            experiment: spec.name.clone(),
            base_dir: spec.base_dir.clone(),
            polls,
            ttl: spec.orchestration.ttl_seconds_for_trials.map(Duration::from_secs_f64),
            shepherd,
            plugin_metrics,
        })
    }

    fn render(&self, t: &Template, job: &TrialJob, quote: bool) -> String {
        let dir = job.trial_dir.to_string_lossy();
        t.render(&|name| {
            let raw = match name {
                "trial" => job.index.to_string(),
                "trial_dir" => dir.to_string(),
                "experiment" => self.experiment.clone(),
                "params_file" => job.trial_dir.join("params.json").to_string_lossy().into_owned(),
                "slot" => job.slot.to_string(),
                p => job.arm.get(p).map(|v| v.to_string()).unwrap_or_default(),
            };
            if quote {
                shlex::try_quote(&raw).map(|c| c.into_owned()).unwrap_or(raw)
            } else {
                raw
            }
        })
    }

    fn request(&self, job: &TrialJob) -> SpawnRequest {
        let argv: Vec<String> = if self.spec.shell {
            let script = self.spec.argv.iter().map(|t| self.render(t, job, true)).collect::<Vec<_>>().join(" ");
            vec!["sh".into(), "-c".into(), script]
        } else {
            self.spec.argv.iter().map(|t| self.render(t, job, false)).collect()
        };
        let dir = job.trial_dir.to_string_lossy().into_owned();
        let mut env = vec![
            ("OPTX_TRIAL_INDEX".to_string(), job.index.to_string()),
            ("OPTX_TRIAL_DIR".to_string(), dir.clone()),
            ("OPTX_SLOT".to_string(), job.slot.to_string()),
            ("OPTX_EXPERIMENT".to_string(), self.experiment.clone()),
            ("OPTX_PARAMS".to_string(), job.arm.to_json().to_string()),
            ("OPTX_PARAMS_FILE".to_string(), format!("{dir}/params.json")),
            ("OPTX_RESULT_FILE".to_string(), format!("{dir}/result.json")),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ];
        for (name, v) in &job.arm.values {
            let var: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            env.push((format!("OPTX_PARAM_{var}"), v.to_string()));
        }
        for (k, t) in &self.spec.env {
            env.push((k.clone(), self.render(t, job, false)));
        }
        let cwd = match &self.spec.workdir {
            Some(t) => self.base_dir.join(self.render(t, job, false)),
            None => self.base_dir.clone(),
        };
        SpawnRequest { trial: job.index, program: self.program.clone(), argv, env, cwd, dir: job.trial_dir.clone() }
    }

    fn tail(&self, job: &TrialJob) -> Tail {
        Tail {
            path: job.trial_dir.join(exec::STDOUT_FILE),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            parser: OutputParser::new(&self.metrics, &self.spec.progression),
        }
    }

    /// The deadline of a trial and what to say when it passes.
    fn deadline(&self, started: SystemTime) -> Option<(Instant, String)> {
        let elapsed = SystemTime::now().duration_since(started).unwrap_or_default();
        let mut best: Option<(Duration, String)> = None;
        if let Some(t) = self.spec.timeout {
            best = Some((t, format!("timed out after {}", humantime::format_duration(t))));
        }
        if let Some(t) = self.ttl {
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, format!("ran longer than ttl_seconds_for_trials ({}s)", t.as_secs_f64())));
            }
        }
        best.map(|(d, why)| (Instant::now() + d.saturating_sub(elapsed), why))
    }

    /// TERM to the group, `stop_grace`, then KILL; wait for the end. Returns how it ended
    /// and whether KILL was needed.
    fn stop(&self, info: RunInfo, rx: Option<&Receiver<ProcEvent>>, dir: &Path) -> (Waited, bool) {
        exec::kill_group(info.pid, false);
        let grace_end = Instant::now() + self.spec.stop_grace;
        if let Some(w) = self.wait_until(info, rx, dir, Some(grace_end)) {
            return (w, false);
        }
        exec::kill_group(info.pid, true);
        let w = self.wait_until(info, rx, dir, Some(Instant::now() + Duration::from_secs(10)));
        (w.unwrap_or(Waited::Gone), true)
    }

    /// Wait for the process to end, until `until`; `None` if it still runs then.
    fn wait_until(
        &self,
        info: RunInfo,
        rx: Option<&Receiver<ProcEvent>>,
        dir: &Path,
        until: Option<Instant>,
    ) -> Option<Waited> {
        let mut step = Duration::from_millis(20);
        loop {
            if let Some(rx) = rx {
                let timeout = until.map_or(Duration::from_secs(3600), |u| u.saturating_duration_since(Instant::now()));
                match rx.recv_timeout(timeout) {
                    Ok(ProcEvent::Exited(e)) => return Some(Waited::Exited(e)),
                    Ok(ProcEvent::ShepherdGone) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        return self.wait_until(info, None, dir, until)
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => return None,
                }
            }
            if let Some(e) = exec::read_exit(dir) {
                return Some(Waited::Exited(e));
            }
            if !exec::alive(info.pid, info.start) {
                // The shepherd may be writing the status right now: look once more.
                std::thread::sleep(Duration::from_millis(50));
                return Some(exec::read_exit(dir).map_or(Waited::Gone, Waited::Exited));
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return None;
            }
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(200));
        }
    }

    /// Follow a running process to its end: events from the shepherd (or, without one,
    /// its files), stop requests, the deadline, and the output as it grows.
    fn follow(
        &self,
        job: &TrialJob,
        info: RunInfo,
        mut rx: Option<Receiver<ProcEvent>>,
        control: &Receiver<Control>,
        events: &Sender<RunnerEvent>,
        tail: &mut Tail,
    ) -> TrialResult {
        let deadline = self.deadline(job.started_at.unwrap_or_else(SystemTime::now));
        let mut interval = self.polls.initial.max(Duration::from_millis(50));
        // Without a dispatcher to send them, there are no more stop requests.
        let mut control = control.clone();
        loop {
            let tick = after(interval);
            let dl = deadline.as_ref().map_or_else(never, |(at, _)| crossbeam_channel::at(*at));
            let shepherd_rx = rx.clone().unwrap_or_else(never);
            select! {
                recv(shepherd_rx) -> ev => match ev {
                    Ok(ProcEvent::Exited(e)) => return self.finish(job, Waited::Exited(e), tail, None),
                    Ok(ProcEvent::ShepherdGone) | Err(_) => rx = None,
                },
                recv(control) -> c => {
                    let Ok(Control::Stop { reason, lost }) = c else {
                        control = never();
                        continue;
                    };
                    let (w, killed) = self.stop(info, rx.as_ref(), &job.trial_dir);
                    let how = if killed { "SIGTERM, then SIGKILL" } else { "SIGTERM" };
                    let stop = serde_json::json!({"reason": reason, "signals": how});
                    let mut r = self.finish(job, w, tail, Some(stop));
                    r.outcome = Outcome::Failed { reason: format!("{reason} (stopped with {how})"), lost };
                    return r;
                },
                recv(dl) -> _ => {
                    let why = deadline.as_ref().map(|d| d.1.clone()).unwrap_or_default();
                    let (w, killed) = self.stop(info, rx.as_ref(), &job.trial_dir);
                    let how = if killed { format!("SIGTERM, then SIGKILL after {}", humantime::format_duration(self.spec.stop_grace)) } else { "SIGTERM".into() };
                    let stop = serde_json::json!({"reason": why, "signals": how});
                    let mut r = self.finish(job, w, tail, Some(stop));
                    let stderr = last_lines(&job.trial_dir.join(exec::STDERR_FILE), 5);
                    let tail_note = if stderr.is_empty() { String::new() } else { format!("; stderr ends with:\n{stderr}") };
                    r.outcome = Outcome::Failed { reason: format!("{why} (stopped with {how}){tail_note}"), lost: false };
                    return r;
                },
                recv(tick) -> _ => {
                    let points: Vec<MetricPoint> = tail.read(false).into_iter().filter(|p| p.progression.is_some()).collect();
                    if !points.is_empty() {
                        let _ = events.send(RunnerEvent::Progress { index: job.index, points });
                        interval = self.polls.initial.max(Duration::from_millis(50));
                    } else {
                        interval = self.polls.next(interval).max(Duration::from_millis(50));
                    }
                    if rx.is_none() {
                        if let Some(w) = self.wait_until(info, None, &job.trial_dir, Some(Instant::now())) {
                            return self.finish(job, w, tail, None);
                        }
                    }
                },
            }
        }
    }

    /// Read everything the trial left and decide its outcome.
    fn finish(
        &self,
        job: &TrialJob,
        waited: Waited,
        tail: &mut Tail,
        stop_metadata: Option<serde_json::Value>,
    ) -> TrialResult {
        let mut curve: Vec<MetricPoint> = tail.read(true).into_iter().filter(|p| p.progression.is_some()).collect();
        let dir = &job.trial_dir;
        let mut finals: BTreeMap<String, MetricPoint> = tail.parser.last.clone();
        let mut problems: Vec<String> = Vec::new();
        read_result_files(dir, &self.metrics, &self.required, &mut finals, &mut problems);
        let meta = serde_json::json!({ "trial_dir": dir });
        self.plugin_metrics.fetch(job.index, &meta, &mut finals, &mut curve, &mut problems);
        let finals_vec: Vec<MetricPoint> = finals.values().cloned().collect();
        let missing: Vec<&String> = self.required.iter().filter(|m| !finals.contains_key(*m)).collect();
        let nonfinite: Vec<String> = finals
            .values()
            .filter(|p| self.required.contains(&p.metric) && !p.mean.is_finite())
            .map(|p| format!("metric `{}` is not finite ({})", p.metric, p.mean))
            .collect();
        let stderr_tail = || {
            let s = last_lines(&dir.join(exec::STDERR_FILE), 5);
            if s.is_empty() {
                String::new()
            } else {
                format!("; stderr ends with:\n{s}")
            }
        };
        let (outcome, note) = match waited {
            Waited::Exited(e) if !e.success() => {
                (Outcome::Failed { reason: format!("{}{}", e.describe(), stderr_tail()), lost: false }, None)
            }
            Waited::Gone if !missing.is_empty() || !nonfinite.is_empty() => (
                Outcome::Failed {
                    reason:
                        "the process ended while optx was not running and left no exit status and no complete result"
                            .into(),
                    lost: true,
                },
                None,
            ),
            w => {
                let note = matches!(w, Waited::Gone).then(|| "the exit status is unknown (the process ended while optx was not running); its reported metrics were recovered".to_string());
                if let Some(p) = problems.first().filter(|_| !missing.is_empty()) {
                    (Outcome::Failed { reason: p.clone(), lost: false }, note)
                } else if !missing.is_empty() {
                    let names = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
                    let reason = format!(
                        "metric {names} was not reported (looked in result.json, JSON lines and name=value pairs on stdout{}){}",
                        if self.metrics.values().any(|r| !matches!(r, MetricRule::Default)) { ", and the [metrics] rules" } else { "" },
                        stderr_tail()
                    );
                    (Outcome::Failed { reason, lost: false }, note)
                } else if let Some(nf) = nonfinite.first() {
                    (Outcome::Failed { reason: nf.clone(), lost: false }, note)
                } else if let Some(p) = problems.first() {
                    (Outcome::Completed, Some(note.map_or(p.clone(), |n| format!("{n}; {p}"))))
                } else {
                    (Outcome::Completed, note)
                }
            }
        };
        TrialResult { outcome, finals: finals_vec, curve, stop_metadata, note }
    }

    /// An outcome unknowable through no fault of the trial: it runs again.
    fn lost(reason: String) -> TrialResult {
        TrialResult::failed(reason, true)
    }

    fn failed(reason: String) -> TrialResult {
        TrialResult::failed(reason, false)
    }
}

impl TrialRunner for CommandRunner {
    fn execute(&self, mut job: TrialJob, control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
        let finished = |result| {
            let _ = events.send(RunnerEvent::Finished { index: job.index, result });
        };
        let mut tail = self.tail(&job);
        if let Some(meta) = &job.attach {
            // A trial that was running when optx stopped: follow it through its files.
            let info: Option<RunInfo> =
                serde_json::from_value(meta.clone()).ok().or_else(|| exec::read_run_info(&job.trial_dir));
            let Some(info) = info else {
                return finished(Self::lost("optx stopped while deploying this trial; it never ran".into()));
            };
            let r = self.follow(&job, info, None, control, events, &mut tail);
            return finished(r);
        }
        if let Err(e) = std::fs::create_dir_all(&job.trial_dir) {
            return finished(Self::failed(format!("cannot create the trial dir {}: {e}", job.trial_dir.display())));
        }
        let params = serde_json::to_vec_pretty(&job.arm.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(job.trial_dir.join("params.json"), params) {
            return finished(Self::failed(format!("cannot write params.json: {e}")));
        }
        let req = self.request(&job);
        let rx = self.shepherd.spawn(&req);
        job.started_at = Some(SystemTime::now());
        let deployed = |info: RunInfo| {
            let meta = serde_json::json!({"pid": info.pid, "start": info.start, "trial_dir": job.trial_dir});
            let _ = events.send(RunnerEvent::Deployed { index: job.index, run_metadata: meta });
        };
        // A short trial reports its deployment and its end together (one transaction, one
        // wake-up of the dispatcher); a longer one reports it after REPORT_DELAY.
        let mut wait = REPORT_DELAY;
        let info = loop {
            match rx.recv_timeout(wait) {
                Ok(ProcEvent::Exited(e @ ExitInfo::SpawnError(_))) => return finished(Self::failed(e.describe())),
                Ok(ProcEvent::Exited(exit)) => {
                    deployed(exec::read_run_info(&job.trial_dir).unwrap_or(RunInfo { pid: 0, start: None }));
                    let r = self.finish(&job, Waited::Exited(exit), &mut tail, None);
                    return finished(r);
                }
                Ok(ProcEvent::ShepherdGone) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return finished(Self::lost("the process that starts trials (optx's shepherd) is gone".into()));
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            // Still running: its pid is in process.jsonl once the shepherd has started it.
            if let Some(info) = exec::read_run_info(&job.trial_dir) {
                break info;
            }
            wait = Duration::from_millis(10);
        };
        deployed(info);
        let r = self.follow(&job, info, Some(rx), control, events, &mut tail);
        finished(r)
    }

    fn cleanup(&self, dir: &Path, failed: bool) {
        let remove = match self.spec.keep_trial_dirs {
            KeepTrialDirs::All => false,
            KeepTrialDirs::Failed => !failed,
            KeepTrialDirs::None => true,
        };
        if remove {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn close(&self) {
        self.shepherd.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(dir: &Path) -> Tail {
        let mut m = BTreeMap::new();
        m.insert("f".to_string(), MetricRule::Default);
        Tail {
            path: dir.join("out"),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            parser: OutputParser::new(&m, "step"),
        }
    }

    #[test]
    fn the_tail_follows_growing_output_across_chunks_and_skips_monster_lines() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tail(d.path());
        let mut text = String::from("f=1 step=1\n");
        text.push_str(&"x".repeat(3 * MAX_LINE));
        text.push_str(" f=99\nf=2 step=2\nf=3");
        std::fs::write(d.path().join("out"), &text[..TAIL_CHUNK + 10]).unwrap();
        let first = t.read(false);
        assert_eq!(first.len(), 1);
        std::fs::write(d.path().join("out"), &text).unwrap();
        let rest = t.read(false);
        assert_eq!(rest.iter().map(|p| p.mean).collect::<Vec<_>>(), vec![2.0], "the monster line is skipped");
        assert!(t.partial.len() <= MAX_LINE);
        let end = t.read(true);
        assert_eq!(end.iter().map(|p| p.mean).collect::<Vec<_>>(), vec![3.0], "the last line counts at the end");
    }
}
