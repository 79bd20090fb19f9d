//! `[metrics.X] plugin = ...`: metrics read from a plugin, at a trial's end (its final
//! values) and while it runs (the points of its learning curves).

use std::collections::BTreeMap;
use std::time::Duration;

use crossbeam_channel::Sender;
use optx_plugin_api::host::{CallError, MetricClient};
use serde_json::Value;

use super::calls::{guarded, watched};
use super::check;
use crate::domain::{ExperimentSpec, MetricRule, RunnerSpec};
use crate::runners::verdict::fetch_failed;
use crate::runners::{MetricPoint, RunnerEvent};

/// A call about a trial overran its `call_timeout`: the watchdog ended the trial.
pub(super) struct Abandoned;

/// The `[metrics.X] plugin = ...` metrics of an experiment, opened.
#[derive(Clone, Default)]
pub struct PluginMetrics {
    metrics: Vec<(String, MetricClient)>,
    call_timeout: Duration,
}

/// How often a fetch that says "retry" is asked again, and how long to wait first.
const FETCH_ATTEMPTS: u32 = 5;
const FETCH_FIRST_WAIT: Duration = Duration::from_millis(100);

impl PluginMetrics {
    /// Load and open every plugin metric of `spec`.
    pub fn open(spec: &ExperimentSpec) -> Result<Self, String> {
        let call_timeout = match &spec.runner {
            RunnerSpec::Plugin(p) => p.call_timeout,
            _ => Duration::from_secs(30),
        };
        let mut metrics = Vec::new();
        for (name, rule) in &spec.metrics {
            if let MetricRule::Plugin(r) = rule {
                let p = check(r, "metric")?;
                let m = p.open_metric(&r.name, &r.config, &spec.name).map_err(|e| {
                    format!("{}: the plugin `{}` refused to open metric `{}`: {e}", r.origin, p.name, r.name)
                })?;
                metrics.push((name.clone(), m));
            }
        }
        Ok(PluginMetrics { metrics, call_timeout })
    }

    /// Fetch every plugin metric of a trial: the last point of each is its final value,
    /// points with a progression also go to `curve`.
    pub fn fetch(
        &self,
        index: u64,
        metadata: &Value,
        finals: &mut BTreeMap<String, MetricPoint>,
        curve: &mut Vec<MetricPoint>,
        problems: &mut Vec<String>,
    ) {
        let _ = self.fetch_watched(index, metadata, None, finals, curve, problems);
    }

    /// `fetch`; with `watch`, each call runs on this thread under the watchdog, which ends
    /// the trial through the sender if the call overruns (then `Err(Abandoned)`).
    pub(super) fn fetch_watched(
        &self,
        index: u64,
        metadata: &Value,
        watch: Option<&Sender<RunnerEvent>>,
        finals: &mut BTreeMap<String, MetricPoint>,
        curve: &mut Vec<MetricPoint>,
        problems: &mut Vec<String>,
    ) -> Result<(), Abandoned> {
        for (name, client) in &self.metrics {
            let mut wait = FETCH_FIRST_WAIT;
            let mut attempt = 1;
            let result = loop {
                let r = match watch {
                    Some(events) => {
                        watched(self.call_timeout, "fetch", &[index], events, || client.fetch(index, metadata))
                            .ok_or(Abandoned)?
                    }
                    None => {
                        let (c, meta) = (client.clone(), metadata.clone());
                        guarded(self.call_timeout, "fetch", move || c.fetch(index, &meta))
                    }
                };
                match r {
                    Err(e) if e.retry() && attempt < FETCH_ATTEMPTS => {
                        std::thread::sleep(wait);
                        wait *= 2;
                        attempt += 1;
                    }
                    r => break r,
                }
            };
            match result {
                Ok(obs) => {
                    for o in &obs {
                        let p =
                            MetricPoint { metric: name.clone(), progression: o.progression, mean: o.mean, sem: o.sem };
                        if o.progression.is_some() {
                            curve.push(p.clone());
                        }
                        finals.insert(name.clone(), p);
                    }
                    if obs.is_empty() {
                        problems.push(format!("metric `{name}`: the plugin's fetch returned no observation"));
                    }
                }
                Err(e) if e.retry() => {
                    problems.push(fetch_failed(name, &format!(" {attempt} times, last: {e}")));
                }
                Err(e) => problems.push(fetch_failed(name, &format!(": {e}"))),
            }
        }
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// The points of learning curves of running trials (`(index, run metadata)`), each
    /// metric asked once per trial and never again after an error: one call of the driver,
    /// under one `call_timeout` for all (`Err`: it overran). A trial with nothing yet is
    /// left out.
    pub(super) fn fetch_running(&self, trials: Vec<(u64, Value)>) -> Result<Vec<(u64, Vec<MetricPoint>)>, CallError> {
        let metrics = self.metrics.clone();
        guarded(self.call_timeout, "fetch", move || {
            let mut out = Vec::new();
            for (index, meta) in trials {
                let mut points = Vec::new();
                for (name, client) in &metrics {
                    // Nothing yet, or not while it runs: no news.
                    let Ok(obs) = client.fetch(index, &meta) else { continue };
                    for o in obs.iter().filter(|o| o.progression.is_some()) {
                        points.push(MetricPoint {
                            metric: name.clone(),
                            progression: o.progression,
                            mean: o.mean,
                            sem: o.sem,
                        });
                    }
                }
                if !points.is_empty() {
                    out.push((index, points));
                }
            }
            Ok(out)
        })
    }
}
