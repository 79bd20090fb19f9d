//! L1: what people and scripts read: status, the best point, the trials as a table, CSV
//! or JSON. Pure formatting over domain records; the CLI fetches them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};

use crate::domain::{best_trial, final_values, ExperimentSpec, Observation, Trial, TrialStatus};

/// Everything a report is made from.
pub struct Snapshot<'a> {
    pub spec: &'a ExperimentSpec,
    pub trials: &'a [Trial],
    pub finals: HashMap<u64, BTreeMap<String, Observation>>,
}

impl<'a> Snapshot<'a> {
    pub fn new(spec: &'a ExperimentSpec, trials: &'a [Trial], observations: &[Observation]) -> Self {
        Snapshot { spec, trials, finals: final_values(observations) }
    }

    pub fn best(&self) -> Option<(u64, f64)> {
        best_trial(&self.spec.objective, self.trials, &self.finals)
    }

    /// The metric names to show: objective first, then constraints, then the rest seen.
    fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.spec.required_metrics().iter().map(|s| s.to_string()).collect();
        let mut seen: Vec<String> = self.finals.values().flat_map(|m| m.keys().cloned()).collect();
        seen.sort();
        seen.dedup();
        for m in seen {
            if !names.contains(&m) {
                names.push(m);
            }
        }
        names
    }
}

/// Format a number for people: up to 6 significant digits.
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    if (-4..6).contains(&mag) {
        let decimals = (5 - mag).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.5e}")
    }
}

/// `x1=0.25 opt=adam`, for event lines.
pub fn params_inline(params: &serde_json::Value) -> String {
    let Some(obj) = params.as_object() else { return params.to_string() };
    obj.iter()
        .map(|(k, v)| match v {
            serde_json::Value::Number(n) => format!("{k}={}", n.as_f64().map(num).unwrap_or_else(|| n.to_string())),
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the one-line summaries need: counts by status (lost apart), the number of
/// feasible completed trials, and the best one (index, value, parameters).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub counts: BTreeMap<String, u64>,
    pub feasible: u64,
    pub best: Option<(u64, f64, serde_json::Value)>,
}

impl Snapshot<'_> {
    pub fn summary(&self) -> Summary {
        let mut counts = BTreeMap::new();
        for t in self.trials {
            let k = if t.lost { "LOST" } else { t.status.as_str() };
            *counts.entry(k.to_string()).or_insert(0) += 1;
        }
        let feasible =
            self.trials.iter().filter(|t| t.status == TrialStatus::Completed && t.feasible == Some(true)).count()
                as u64;
        let best = self.best().map(|(i, v)| (i, v, self.trials[i as usize].parameters.clone()));
        Summary { counts, feasible, best }
    }
}

/// One line: `30 of 30 trials: 28 completed (27 feasible), 2 failed; 1 lost ...`.
pub fn summary_line(spec: &ExperimentSpec, s: &Summary) -> String {
    let counted: u64 = s.counts.iter().filter(|(k, _)| *k != "LOST").map(|(_, n)| n).sum();
    let mut parts = Vec::new();
    for st in TrialStatus::ALL {
        if let Some(n) = s.counts.get(st.as_str()) {
            let mut p = format!("{n} {}", st.as_str().to_lowercase().replace('_', "-"));
            if st == TrialStatus::Completed && !spec.outcome_constraints.is_empty() {
                let _ = write!(p, " ({} feasible)", s.feasible);
            }
            parts.push(p);
        }
    }
    let mut line = format!("{counted} of {} trials: {}", spec.orchestration.max_trials, parts.join(", "));
    if let Some(n) = s.counts.get("LOST") {
        let _ = write!(line, "; {n} lost (not counted, their arms run again)");
    }
    line
}

pub fn best_line(spec: &ExperimentSpec, s: &Summary) -> String {
    match &s.best {
        Some((i, v, params)) => {
            format!("best: trial {i}, {} = {}  ({})", spec.objective.metric, num(*v), params_inline(params))
        }
        None => "best: no feasible completed trial yet".into(),
    }
}

pub fn status(s: &Snapshot, store: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "experiment: {}  ({} {})", s.spec.name, s.spec.objective.verb(), s.spec.objective.metric);
    let _ = writeln!(out, "store:      {store}");
    let summary = s.summary();
    let _ = writeln!(out, "trials:     {}", summary_line(s.spec, &summary));
    let running: Vec<&Trial> = s.trials.iter().filter(|t| !t.status.is_terminal()).collect();
    if !running.is_empty() {
        let _ = writeln!(out, "running:");
        for t in running {
            let pid =
                t.run_metadata.as_ref().and_then(|m| m.get("pid")).map(|p| format!(" pid {p}")).unwrap_or_default();
            let since = t.started_at.as_deref().unwrap_or(&t.created_at);
            let _ = writeln!(out, "  [{}] {}{pid} since {since}: {}", t.index, t.status, params_inline(&t.parameters));
        }
    }
    let _ = writeln!(out, "{}", best_line(s.spec, &summary));
    out
}

/// The best point as JSON.
pub fn best_json(s: &Snapshot) -> serde_json::Value {
    match s.best() {
        Some((i, v)) => {
            let t = &s.trials[i as usize];
            serde_json::json!({
                "index": i,
                "objective": {"metric": s.spec.objective.metric, "direction": s.spec.objective.verb(), "value": v},
                "parameters": t.parameters,
                "metrics": metrics_json(s, t),
            })
        }
        None => serde_json::Value::Null,
    }
}

pub fn best_text(s: &Snapshot) -> String {
    match s.best() {
        None => "no feasible completed trial yet\n".into(),
        Some((i, v)) => {
            let t = &s.trials[i as usize];
            let mut out = format!("trial {i}: {} = {}\n", s.spec.objective.metric, num(v));
            if let Some(obj) = t.parameters.as_object() {
                let w = obj.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in obj {
                    let _ = writeln!(
                        out,
                        "  {k:w$}  {}",
                        params_inline(&serde_json::json!({ "": v })).trim_start_matches('=')
                    );
                }
            }
            for (m, o) in s.finals.get(&i).into_iter().flatten() {
                if *m != s.spec.objective.metric {
                    let _ = writeln!(out, "  metric {m} = {}", num(o.mean));
                }
            }
            out
        }
    }
}

fn metrics_json(s: &Snapshot, t: &Trial) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, o) in s.finals.get(&t.index).into_iter().flatten() {
        m.insert(name.clone(), serde_json::json!({"mean": finite(o.mean), "sem": o.sem, "progression": o.progression}));
    }
    serde_json::Value::Object(m)
}

fn finite(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Every trial as a JSON array, in index order (a stable shape: fields are only added).
pub fn trials_json(s: &Snapshot) -> serde_json::Value {
    serde_json::Value::Array(
        s.trials
            .iter()
            .map(|t| {
                serde_json::json!({
                    "index": t.index,
                    "status": t.status.as_str(),
                    "generation": t.generation,
                    "parameters": t.parameters,
                    "metrics": metrics_json(s, t),
                    "feasible": t.feasible,
                    "reason": t.reason,
                    "lost": t.lost,
                    "attempt": t.attempt,
                    "rerun_of": t.rerun_of,
                    "created_at": t.created_at,
                    "started_at": t.started_at,
                    "completed_at": t.completed_at,
                })
            })
            .collect(),
    )
}

fn param_names(s: &Snapshot) -> Vec<String> {
    s.spec.space.parameters.iter().map(|p| p.name.clone()).collect()
}

fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub fn trials_csv(s: &Snapshot) -> Result<String, csv::Error> {
    let params = param_names(s);
    let metrics = s.metric_names();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = vec!["index".into(), "status".into(), "generation".into()];
    header.extend(params.iter().cloned());
    header.extend(metrics.iter().cloned());
    header.extend(["feasible", "lost", "reason", "created_at", "started_at", "completed_at"].map(String::from));
    w.write_record(&header)?;
    for t in s.trials {
        let mut row = vec![t.index.to_string(), t.status.as_str().to_string(), t.generation.clone()];
        row.extend(params.iter().map(|p| cell(t.parameters.get(p))));
        let f = s.finals.get(&t.index);
        row.extend(metrics.iter().map(|m| f.and_then(|f| f.get(m)).map(|o| o.mean.to_string()).unwrap_or_default()));
        row.push(t.feasible.map(|b| b.to_string()).unwrap_or_default());
        row.push(t.lost.to_string());
        row.push(t.reason.clone().unwrap_or_default());
        row.push(t.created_at.clone());
        row.push(t.started_at.clone().unwrap_or_default());
        row.push(t.completed_at.clone().unwrap_or_default());
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn trials_table(s: &Snapshot) -> String {
    let params = param_names(s);
    let metrics = s.metric_names();
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Disabled);
    let mut header: Vec<String> = vec!["#".into(), "status".into(), "gen".into()];
    header.extend(params.iter().cloned());
    header
        .extend(metrics.iter().filter(|m| *m != "cost" || s.finals.values().any(|f| f.contains_key("cost"))).cloned());
    header.push("note".into());
    t.set_header(&header);
    let best = s.best().map(|b| b.0);
    for tr in s.trials {
        let status = if tr.lost {
            "LOST".to_string()
        } else if tr.status == TrialStatus::Completed && tr.feasible == Some(false) {
            "COMPLETED (infeasible)".to_string()
        } else {
            tr.status.as_str().to_string()
        };
        let mut row = vec![
            if Some(tr.index) == best { format!("{}*", tr.index) } else { tr.index.to_string() },
            status,
            tr.generation.clone(),
        ];
        for p in &params {
            row.push(match tr.parameters.get(p) {
                Some(serde_json::Value::Number(n)) => n.as_f64().map(num).unwrap_or_default(),
                v => cell(v),
            });
        }
        let f = s.finals.get(&tr.index);
        for m in metrics.iter().filter(|m| *m != "cost" || s.finals.values().any(|f| f.contains_key("cost"))) {
            row.push(f.and_then(|f| f.get(m)).map(|o| num(o.mean)).unwrap_or_default());
        }
        let note = tr.reason.as_deref().unwrap_or("").lines().next().unwrap_or("");
        let note: String = if note.chars().count() > 60 {
            note.chars().take(57).collect::<String>() + "..."
        } else {
            note.to_string()
        };
        row.push(note);
        t.add_row(row);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(-3.32237), "-3.32237");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1234.5678), "1234.57");
        assert_eq!(num(1e-7), "1.00000e-7");
        assert_eq!(num(0.0), "0");
    }
}
