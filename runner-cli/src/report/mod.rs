//! L1: what people and scripts read: status, the best point, the trials as a table, CSV
//! or JSON. Pure formatting over domain records; the CLI fetches them.

pub mod html;
pub mod model;
pub mod plots;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};

use crate::domain::{best_trials, final_values, ExperimentSpec, Goal, Observation, Point, Trial, TrialStatus};

/// Everything a report is made from.
pub struct Snapshot<'a> {
    pub spec: &'a ExperimentSpec,
    pub trials: &'a [Trial],
    pub finals: HashMap<u64, BTreeMap<String, Observation>>,
    /// The newest point of a learning curve of each running trial (that has one).
    pub latest: HashMap<u64, Observation>,
    /// The optx processes that worked on the experiment (newest last).
    pub workers: Vec<WorkerView>,
}

/// One worker (a run, resume or join of the experiment), as reports show it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub id: i64,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub renewed: Option<String>,
    /// Trials that have not ended and that it follows.
    pub held: usize,
    /// live, ended (exit code), or dead.
    pub state: String,
}

impl<'a> Snapshot<'a> {
    pub fn new(spec: &'a ExperimentSpec, trials: &'a [Trial], observations: &[Observation]) -> Self {
        Snapshot { spec, trials, finals: final_values(observations), latest: HashMap::new(), workers: Vec::new() }
    }

    /// The best trial, or the Pareto front.
    pub fn best(&self) -> Vec<Point> {
        best_trials(&self.spec.goal, self.trials, &self.finals)
    }

    /// The value of each scalarized objective of a trial (plain metrics are shown as such).
    fn scalarized(&self, index: u64) -> Vec<Option<f64>> {
        let f = self.finals.get(&index);
        self.spec
            .goal
            .objectives
            .iter()
            .filter(|o| !o.is_metric())
            .map(|o| o.value(|m| f.and_then(|f| f.get(m)).map(|x| x.mean)))
            .collect()
    }

    fn scalarized_names(&self) -> Vec<String> {
        self.spec.goal.objectives.iter().filter(|o| !o.is_metric()).map(|o| o.name.clone()).collect()
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
/// feasible completed trials, and the best one or the Pareto front (index, objective
/// values, parameters).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub counts: BTreeMap<String, u64>,
    pub feasible: u64,
    pub best: Vec<(u64, Vec<f64>, serde_json::Value)>,
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
        let best = self.best().into_iter().map(|(i, v)| (i, v, self.trials[i as usize].parameters.clone())).collect();
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

/// `loss = 0.25, latency_ms = 120`.
fn objectives_inline(goal: &Goal, values: &[f64]) -> String {
    goal.objectives.iter().zip(values).map(|(o, v)| format!("{} = {}", o.name, num(*v))).collect::<Vec<_>>().join(", ")
}

pub fn best_line(spec: &ExperimentSpec, s: &Summary) -> String {
    let goal = &spec.goal;
    match s.best.as_slice() {
        [] if goal.is_multi() && !goal.thresholds.is_empty() => {
            "Pareto front: no feasible completed trial within the thresholds yet".into()
        }
        [] => "best: no feasible completed trial yet".into(),
        [(i, v, params)] if !goal.is_multi() => {
            format!("best: trial {i}, {}  ({})", objectives_inline(goal, v), params_inline(params))
        }
        front => {
            let shown: Vec<String> = front.iter().take(10).map(|(i, _, _)| i.to_string()).collect();
            let more = if front.len() > 10 { format!(" and {} more", front.len() - 10) } else { String::new() };
            format!(
                "Pareto front: {} trial{}: {}{more} (`optx best` lists them)",
                front.len(),
                if front.len() == 1 { "" } else { "s" },
                shown.join(", ")
            )
        }
    }
}

/// What a running trial is at: its newest point of a learning curve, if any.
fn progress_of(s: &Snapshot, t: &Trial) -> Option<String> {
    let o = s.latest.get(&t.index)?;
    Some(format!("progression {}: {} {}", num(o.progression?), o.metric, num(o.mean)))
}

/// Whether a live worker follows the experiment (else its running trials go on alone).
fn owned(s: &Snapshot) -> bool {
    s.workers.iter().any(|w| w.state == "live")
}

pub fn status(s: &Snapshot, store: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "experiment: {}  ({})", s.spec.name, s.spec.goal.describe());
    let _ = writeln!(out, "store:      {store}");
    let summary = s.summary();
    let _ = writeln!(out, "trials:     {}", summary_line(s.spec, &summary));
    let running: Vec<&Trial> = s.trials.iter().filter(|t| !t.status.is_terminal()).collect();
    if !running.is_empty() {
        let _ = writeln!(out, "running:");
        for t in &running {
            let pid =
                t.run_metadata.as_ref().and_then(|m| m.get("pid")).map(|p| format!(" pid {p}")).unwrap_or_default();
            let since = t.started_at.as_deref().unwrap_or(&t.created_at);
            let at = progress_of(s, t).map(|p| format!(" {p};")).unwrap_or_default();
            let _ =
                writeln!(out, "  [{}] {}{pid} since {since}:{at} {}", t.index, t.status, params_inline(&t.parameters));
        }
        if !owned(s) && !s.workers.is_empty() {
            let _ = writeln!(
                out,
                "nobody runs this experiment now: its {} open trial(s) go on without optx, and `optx resume {store}` re-attaches to them",
                running.len()
            );
        }
    }
    let _ = writeln!(out, "{}", best_line(s.spec, &summary));
    // The workers that still matter: the live and dead ones, and the last one that ended.
    let shown: Vec<&WorkerView> = s
        .workers
        .iter()
        .enumerate()
        .filter(|(i, w)| !w.state.starts_with("ended") || *i + 1 == s.workers.len())
        .map(|(_, w)| w)
        .collect();
    if !shown.is_empty() {
        let _ = writeln!(out, "workers:");
        for w in shown {
            let renewed = w.renewed.as_deref().map(|r| format!(", lease renewed {r}")).unwrap_or_default();
            let held = if w.held > 0 { format!(", {} trial(s) held", w.held) } else { String::new() };
            let _ = writeln!(
                out,
                "  #{} pid {} on {} since {}{renewed}{held}: {}",
                w.id, w.pid, w.host, w.started, w.state
            );
        }
    }
    out
}

/// `optx status --json`: the same as the text, as one object.
pub fn status_json(s: &Snapshot, store: &str) -> serde_json::Value {
    let counts = s.summary().counts;
    let running: Vec<serde_json::Value> = s
        .trials
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| {
            let latest = s.latest.get(&t.index).map(
                |o| serde_json::json!({"progression": o.progression, "metric": o.metric, "value": finite(o.mean)}),
            );
            serde_json::json!({
                "index": t.index,
                "status": t.status.as_str(),
                "pid": t.run_metadata.as_ref().and_then(|m| m.get("pid")).cloned(),
                "since": t.started_at.as_deref().unwrap_or(&t.created_at),
                "parameters": t.parameters,
                "latest": latest,
            })
        })
        .collect();
    let workers: Vec<serde_json::Value> = s
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({"id": w.id, "host": w.host, "pid": w.pid, "started": w.started,
                "renewed": w.renewed, "held": w.held, "state": w.state})
        })
        .collect();
    serde_json::json!({
        "experiment": s.spec.name,
        "store": store,
        "trials": s.trials.len(),
        "by_status": counts,
        "running": running,
        "owned": owned(s),
        "best": best_json(s, None),
        "workers": workers,
    })
}

fn objectives_json(goal: &Goal, values: &[f64]) -> serde_json::Value {
    serde_json::Value::Array(
        goal.objectives
            .iter()
            .zip(values)
            .map(|(o, v)| serde_json::json!({"name": o.name, "direction": o.verb(), "value": finite(*v)}))
            .collect(),
    )
}

/// The best point as JSON (`null` when there is none); for several objectives
/// `{"objectives": [...], "pareto_front": [...]}`.
pub fn best_json(s: &Snapshot, model: Option<&model::ModelBest>) -> serde_json::Value {
    let goal = &s.spec.goal;
    let entry = |(i, v): &Point| {
        let t = &s.trials[*i as usize];
        serde_json::json!({
            "index": i,
            "objectives": objectives_json(goal, v),
            "parameters": t.parameters,
            "metrics": metrics_json(s, t),
        })
    };
    let best = s.best();
    if goal.is_multi() {
        let objectives: Vec<serde_json::Value> =
            goal.objectives.iter().map(|o| serde_json::json!({"name": o.name, "direction": o.verb()})).collect();
        let thresholds: Vec<String> = goal.thresholds.iter().map(|t| t.to_string()).collect();
        return serde_json::json!({
            "objectives": objectives,
            "thresholds": thresholds,
            "pareto_front": best.iter().map(entry).collect::<Vec<_>>(),
        });
    }
    match best.first() {
        Some(p) => {
            let mut e = entry(p);
            let o = &goal.objectives[0];
            e["objective"] = serde_json::json!({"metric": o.name, "direction": o.verb(), "value": finite(p.1[0])});
            // A noisy objective: the model's pick beside the best observed one.
            if let Some(m) = model {
                let t = &s.trials[m.index as usize];
                e["model"] = serde_json::json!({
                    "index": m.index,
                    "parameters": t.parameters,
                    "predicted": {"mean": finite(m.mean), "sd": finite(m.sd)},
                    "observed": finite(m.observed),
                });
            }
            e
        }
        None => serde_json::Value::Null,
    }
}

pub fn best_text(s: &Snapshot, model: Option<&model::ModelBest>) -> String {
    let goal = &s.spec.goal;
    let best = s.best();
    if goal.is_multi() {
        return front_text(s, &best);
    }
    let Some((i, v)) = best.first() else { return "no feasible completed trial yet\n".into() };
    let t = &s.trials[*i as usize];
    let mut out = format!("trial {i}: {}\n", objectives_inline(goal, v));
    if let Some(obj) = t.parameters.as_object() {
        let w = obj.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in obj {
            let _ = writeln!(out, "  {k:w$}  {}", params_inline(&serde_json::json!({ "": v })).trim_start_matches('='));
        }
    }
    for (m, o) in s.finals.get(i).into_iter().flatten() {
        if *m != goal.objectives[0].name {
            let _ = writeln!(out, "  metric {m} = {}", num(o.mean));
        }
    }
    if let Some(m) = model {
        let name = &goal.objectives[0].name;
        let _ = writeln!(
            out,
            "the objective is noisy: the model's best is trial {}, predicted {name} = {} ± {} (observed {})",
            m.index,
            num(m.mean),
            num(m.sd),
            num(m.observed)
        );
        if let Some(obj) = s.trials[m.index as usize].parameters.as_object() {
            let _ = writeln!(out, "  {}", params_inline(&serde_json::Value::Object(obj.clone())));
        }
    }
    out
}

/// The Pareto front as a table: one row per trial, objectives then parameters.
fn front_text(s: &Snapshot, front: &[Point]) -> String {
    let goal = &s.spec.goal;
    let mut out = format!("Pareto front ({}", goal.describe());
    if !goal.thresholds.is_empty() {
        let t: Vec<String> = goal.thresholds.iter().map(|t| t.to_string()).collect();
        let _ = write!(out, "; thresholds {}", t.join(", "));
    }
    if front.is_empty() {
        return out + "): no feasible completed trial yet\n";
    }
    let _ = writeln!(out, "): {} trial{}", front.len(), if front.len() == 1 { "" } else { "s" });
    let params = param_names(s);
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Disabled);
    let mut header: Vec<String> = vec!["#".into()];
    header.extend(goal.objectives.iter().map(|o| o.name.clone()));
    header.extend(params.iter().cloned());
    t.set_header(&header);
    for (i, v) in front {
        let tr = &s.trials[*i as usize];
        let mut row = vec![i.to_string()];
        row.extend(v.iter().map(|x| num(*x)));
        row.extend(params.iter().map(|p| param_cell(tr.parameters.get(p))));
        t.add_row(row);
    }
    let _ = writeln!(out, "{t}");
    out
}

fn param_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_f64().map(num).unwrap_or_default(),
        v => cell(v),
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
                    "stop_metadata": t.stop_metadata,
                    "lost": t.lost,
                    "attempt": t.attempt,
                    "worker": t.session,
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
    header.extend(s.scalarized_names());
    header.extend(["feasible", "lost", "reason", "created_at", "started_at", "completed_at"].map(String::from));
    w.write_record(&header)?;
    for t in s.trials {
        let mut row = vec![t.index.to_string(), t.status.as_str().to_string(), t.generation.clone()];
        row.extend(params.iter().map(|p| cell(t.parameters.get(p))));
        let f = s.finals.get(&t.index);
        row.extend(metrics.iter().map(|m| f.and_then(|f| f.get(m)).map(|o| o.mean.to_string()).unwrap_or_default()));
        row.extend(s.scalarized(t.index).into_iter().map(|v| v.map(|v| v.to_string()).unwrap_or_default()));
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

/// Every trial as a table: `width` columns at most (cells wrap), or as wide as it takes.
pub fn trials_table(s: &Snapshot, width: Option<u16>) -> String {
    let params = param_names(s);
    let metrics = s.metric_names();
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    match width {
        Some(w) => t.set_content_arrangement(ContentArrangement::Dynamic).set_width(w),
        None => t.set_content_arrangement(ContentArrangement::Disabled),
    };
    let mut header: Vec<String> = vec!["#".into(), "status".into(), "gen".into()];
    header.extend(params.iter().cloned());
    header
        .extend(metrics.iter().filter(|m| *m != "cost" || s.finals.values().any(|f| f.contains_key("cost"))).cloned());
    header.extend(s.scalarized_names());
    header.push("note".into());
    t.set_header(&header);
    let best: Vec<u64> = s.best().into_iter().map(|b| b.0).collect();
    for tr in s.trials {
        let status = if tr.lost {
            "LOST".to_string()
        } else if tr.status == TrialStatus::Completed && tr.feasible == Some(false) {
            "COMPLETED (infeasible)".to_string()
        } else {
            tr.status.as_str().to_string()
        };
        let mut row = vec![
            if best.contains(&tr.index) { format!("{}*", tr.index) } else { tr.index.to_string() },
            status,
            tr.generation.clone(),
        ];
        row.extend(params.iter().map(|p| param_cell(tr.parameters.get(p))));
        let f = s.finals.get(&tr.index);
        for m in metrics.iter().filter(|m| *m != "cost" || s.finals.values().any(|f| f.contains_key("cost"))) {
            row.push(f.and_then(|f| f.get(m)).map(|o| num(o.mean)).unwrap_or_default());
        }
        row.extend(s.scalarized(tr.index).into_iter().map(|v| v.map(num).unwrap_or_default()));
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
