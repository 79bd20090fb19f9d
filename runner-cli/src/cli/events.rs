//! What a run shows while it runs: event lines for people (plain when piped), JSON objects
//! with `--events-json`, nothing but notices with `--quiet`, and on a terminal a progress
//! line under the events: trials by status, the best so far, elapsed time and ETA, and each
//! running trial's latest progression.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::report;
use crate::scheduler::{EventSink, RunEvent};

/// How events are shown.
pub(super) enum Printer {
    Quiet,
    Json,
    Lines,
    Bar(Box<Progress>),
}

impl Printer {
    /// The printer for the options and the terminal: a progress line only when both
    /// stdout and stderr are terminals (a pipe gets plain lines).
    pub fn new(quiet: bool, json: bool) -> Printer {
        use std::io::IsTerminal;
        if quiet {
            Printer::Quiet
        } else if json {
            Printer::Json
        } else if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            Printer::Bar(Box::new(Progress::new()))
        } else {
            Printer::Lines
        }
    }

    /// The run is over: the progress line goes, the lines above it stay.
    pub fn finish(&mut self) {
        if let Printer::Bar(p) = self {
            p.bar.finish_and_clear();
        }
    }
}

impl EventSink for Printer {
    fn event(&mut self, e: &RunEvent) {
        match self {
            Printer::Quiet => {
                if let RunEvent::Notice(n) = e {
                    eprintln!("optx: {n}");
                }
            }
            Printer::Json => {
                if let Some(v) = json(e) {
                    // A closed stdout is not a reason to stop the run: its trials go on.
                    let _ = writeln!(std::io::stdout().lock(), "{v}");
                }
            }
            Printer::Lines => {
                if let Some(l) = line(e) {
                    let _ = writeln!(std::io::stdout().lock(), "{l}");
                }
            }
            Printer::Bar(p) => p.event(e),
        }
    }
}

/// An event as a JSON object (progress points are not events of this stream).
pub(super) fn json(e: &RunEvent) -> Option<serde_json::Value> {
    Some(match e {
        RunEvent::Started { name, store, max_trials, parallelism, method, existing } => serde_json::json!({
            "event": "started", "name": name, "store": store.to_string(), "max_trials": max_trials,
            "parallelism": parallelism, "generation": method, "existing": existing}),
        RunEvent::Reattached { index, pid } => serde_json::json!({"event": "reattached", "trial": index, "pid": pid}),
        RunEvent::Deployed { index, params, generation } => {
            serde_json::json!({"event": "deployed", "trial": index, "parameters": params, "generation": generation})
        }
        RunEvent::Completed { index, values, feasible, best, note } => {
            let objectives: serde_json::Map<String, serde_json::Value> =
                values.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            let (metric, value) = values.first().cloned().unwrap_or_default();
            serde_json::json!({
            "event": "completed", "trial": index, "metric": metric, "value": value,
            "objectives": objectives, "feasible": feasible, "best": best, "note": note})
        }
        RunEvent::Failed { index, reason, lost, will_retry } => {
            serde_json::json!({"event": "failed", "trial": index, "reason": reason, "lost": lost, "retry": will_retry})
        }
        RunEvent::EarlyStopped { index, reason } => {
            serde_json::json!({"event": "early_stopped", "trial": index, "reason": reason})
        }
        RunEvent::Notice(n) => serde_json::json!({"event": "notice", "message": n}),
        RunEvent::Progress { .. } => return None,
    })
}

/// An event as lines for people (progress points are shown by the progress line only).
pub(super) fn line(e: &RunEvent) -> Option<String> {
    Some(match e {
        RunEvent::Started { name, store, max_trials, parallelism, method, existing } => {
            let resumed = if *existing > 0 { format!(", {existing} already there") } else { String::new() };
            format!(
                "optx: `{name}`: {max_trials} trials{resumed}, parallelism {parallelism}; store {store}\noptx: generation: {method}"
            )
        }
        RunEvent::Reattached { index, pid } => match pid {
            Some(p) => format!("[{index:>4}] re-attached to pid {p}"),
            None => format!("[{index:>4}] re-attached"),
        },
        RunEvent::Deployed { index, params, generation } => {
            format!("[{index:>4}] deployed   {}  ({generation})", report::params_inline(params))
        }
        RunEvent::Completed { index, values, feasible, best, note } => {
            let v = values
                .iter()
                .map(|(m, v)| format!("{m} = {}", v.map(report::num).unwrap_or_else(|| "?".into())))
                .collect::<Vec<_>>()
                .join(", ");
            let tag = if *best && values.len() > 1 {
                "  * on the Pareto front"
            } else if *best {
                "  * best so far"
            } else if !feasible {
                "  (infeasible)"
            } else {
                ""
            };
            let note = note.as_ref().map(|n| format!("  [{n}]")).unwrap_or_default();
            format!("[{index:>4}] completed  {v}{tag}{note}")
        }
        RunEvent::Failed { index, reason, lost, will_retry } => {
            let mut lines = reason.lines();
            let first = lines.next().unwrap_or("");
            let what = if *lost { "lost      " } else { "failed    " };
            let then = if *lost {
                "  (not counted; its arm runs again)"
            } else if *will_retry {
                "  (will retry)"
            } else {
                ""
            };
            let mut out = format!("[{index:>4}] {what} {first}{then}");
            for l in lines {
                out += &format!("\n         | {l}");
            }
            out
        }
        RunEvent::EarlyStopped { index, reason } => format!("[{index:>4}] stopped    {reason}"),
        RunEvent::Notice(n) => format!("optx: {n}"),
        RunEvent::Progress { .. } => return None,
    })
}

/// The progress line and what it counts.
pub(super) struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    /// Trials of the budget, and those that were there before this run.
    max_trials: u64,
    existing: u64,
    ended: BTreeMap<&'static str, u64>,
    /// Running trials, with their latest point (progression, value).
    running: BTreeMap<u64, Option<(f64, f64)>>,
    best: Option<String>,
}

impl Progress {
    fn new() -> Progress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress {
            bar,
            started: Instant::now(),
            max_trials: 0,
            existing: 0,
            ended: BTreeMap::new(),
            running: BTreeMap::new(),
            best: None,
        }
    }

    fn event(&mut self, e: &RunEvent) {
        match e {
            RunEvent::Started { max_trials, existing, .. } => {
                self.max_trials = *max_trials;
                self.existing = *existing;
            }
            RunEvent::Deployed { index, .. } | RunEvent::Reattached { index, .. } => {
                self.running.insert(*index, None);
            }
            RunEvent::Progress { index, progression, value, .. } => {
                if let Some(r) = self.running.get_mut(index) {
                    *r = Some((*progression, *value));
                }
            }
            RunEvent::Completed { index, values, best, .. } => {
                self.end(*index, "completed");
                if *best && values.len() == 1 {
                    self.best = values[0].1.map(|v| format!("{} {}", values[0].0, report::num(v)));
                }
            }
            RunEvent::Failed { index, lost, .. } => self.end(*index, if *lost { "lost" } else { "failed" }),
            RunEvent::EarlyStopped { index, .. } => self.end(*index, "stopped"),
            RunEvent::Notice(_) => {}
        }
        if let Some(l) = line(e) {
            self.bar.println(l);
        }
        self.bar.set_message(self.message(self.started.elapsed()));
    }

    fn end(&mut self, index: u64, what: &'static str) {
        self.running.remove(&index);
        *self.ended.entry(what).or_insert(0) += 1;
    }

    /// `12/30 trials: 3 running, 8 completed, 1 failed; best loss 0.084; 2m10s, ETA 3m; [14] step 7: loss 0.2`
    pub(super) fn message(&self, elapsed: Duration) -> String {
        let done: u64 = self.ended.iter().filter(|(k, _)| **k != "lost").map(|(_, n)| n).sum();
        let mut parts = vec![format!("{} running", self.running.len())];
        parts.extend(self.ended.iter().map(|(k, n)| format!("{n} {k}")));
        let mut m = format!("{}/{} trials: {}", self.existing + done, self.max_trials, parts.join(", "));
        if let Some(b) = &self.best {
            m += &format!("; best {b}");
        }
        m += &format!("; {}", clock(elapsed));
        let left = self.max_trials.saturating_sub(self.existing + done);
        if done > 0 && left > 0 {
            let eta = elapsed.mul_f64(left as f64 / done as f64);
            m += &format!(", ETA {}", clock(eta));
        }
        for (i, p) in self.running.iter().filter_map(|(i, p)| p.map(|p| (i, p))).take(4) {
            m += &format!("; [{i}] at {}: {}", report::num(p.0), report::num(p.1));
        }
        m
    }
}

/// `45s`, `3m05s`, `2h10m`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_by_status_with_the_best_and_an_eta() {
        let mut p = Progress {
            bar: indicatif::ProgressBar::hidden(),
            started: Instant::now(),
            max_trials: 10,
            existing: 0,
            ended: BTreeMap::new(),
            running: BTreeMap::new(),
            best: None,
        };
        let store = crate::domain::StoreLocation::File("x.db".into());
        p.event(&RunEvent::Started {
            name: "x".into(),
            store,
            max_trials: 10,
            parallelism: 2,
            method: "sobol".into(),
            existing: 0,
        });
        for i in 0..3 {
            p.event(&RunEvent::Deployed { index: i, params: serde_json::json!({}), generation: "sobol".into() });
        }
        p.event(&RunEvent::Progress { index: 2, progression: 7.0, metric: "loss".into(), value: 0.25 });
        p.event(&RunEvent::Completed {
            index: 0,
            values: vec![("loss".into(), Some(0.5))],
            feasible: true,
            best: true,
            note: None,
        });
        p.event(&RunEvent::Failed { index: 1, reason: "boom".into(), lost: false, will_retry: false });
        assert_eq!(
            p.message(Duration::from_secs(20)),
            "2/10 trials: 1 running, 1 completed, 1 failed; best loss 0.5; 20s, ETA 1m20s; [2] at 7: 0.25"
        );
    }
}
