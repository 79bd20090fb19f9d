//! `optx report`: one self-contained HTML file (no network, no external script or font),
//! readable offline and in a browser's print view. Plots are inline SVG (see `plots`);
//! a few lines of vanilla JavaScript sort the trials table and show a plot point's trial.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::plots::{self, Mark};
use super::{num, Snapshot};
use crate::domain::{Domain, Trial, TrialStatus};

/// Points drawn in one scatter plot at most: beyond, an even choice of the trials (the best
/// always among them), so that a report of 10,000 trials stays small and loads fast.
const MAX_POINTS: usize = 2500;
/// Learning curves drawn at most (the best ones and the stopped ones first).
const MAX_CURVES: usize = 300;
/// Lines of the parallel-coordinates plot at most.
const MAX_LINES: usize = 600;

/// What the report is made from beyond the snapshot.
pub struct Extra<'a> {
    /// Each trial's learning curve of the compared metric (the early-stopping one, else the
    /// first objective's), and that metric.
    pub curves: &'a BTreeMap<u64, Vec<(f64, f64)>>,
    pub curve_metric: String,
    /// Generated when, and by which optx.
    pub generated: String,
    /// From a model of the first objective (the caller fits it): each searched parameter's
    /// importance, and the model's mean over the two most important ones.
    pub importance: Vec<(String, f64)>,
    pub contour: Option<Contour>,
}

/// The model's mean of the objective over a grid of two parameters' unit coordinates
/// (rows along `b`), the others at the best trial's values.
pub struct Contour {
    pub a: usize,
    pub b: usize,
    pub grid: Vec<Vec<f64>>,
}

/// A stored time (RFC 3339).
fn time_of(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An even choice of at most `max` of `items`, keeping those `keep` says.
fn thin<T: Clone>(items: &[T], max: usize, keep: impl Fn(&T) -> bool) -> Vec<T> {
    if items.len() <= max {
        return items.to_vec();
    }
    let step = items.len() as f64 / max as f64;
    let mut picked: Vec<bool> = vec![false; items.len()];
    for k in 0..max {
        picked[((k as f64 * step) as usize).min(items.len() - 1)] = true;
    }
    items.iter().enumerate().filter(|(i, t)| picked[*i] || keep(t)).map(|(_, t)| t.clone()).collect()
}

/// The objective a plot shows (the first one) of each trial that has it.
struct Objective {
    name: String,
    minimize: bool,
    values: BTreeMap<u64, f64>,
}

fn objective(s: &Snapshot) -> Option<Objective> {
    let o = s.spec.goal.objectives.first()?;
    let values = s
        .trials
        .iter()
        .filter_map(|t| {
            let f = s.finals.get(&t.index)?;
            Some((t.index, o.value(|m| f.get(m).map(|x| x.mean))?))
        })
        .filter(|(_, v)| v.is_finite())
        .collect();
    Some(Objective { name: o.name.clone(), minimize: o.verb() == "minimize", values })
}

fn mark_of(t: &Trial, best: &[u64]) -> Mark {
    match t.status {
        _ if best.contains(&t.index) => Mark::Best,
        TrialStatus::Completed if t.feasible == Some(false) => Mark::Infeasible,
        TrialStatus::Completed => Mark::Completed,
        TrialStatus::EarlyStopped => Mark::Stopped,
        _ => Mark::Failed,
    }
}

/// A parameter's value as a plot coordinate: log10 for log scaling, the index of a choice.
fn coord(d: &Domain, v: &serde_json::Value) -> Option<f64> {
    match d {
        Domain::Float { log: true, .. } | Domain::Int { log: true, .. } => {
            v.as_f64().filter(|x| *x > 0.0).map(f64::log10)
        }
        Domain::Float { .. } | Domain::Int { .. } => v.as_f64(),
        Domain::Choice { values, .. } => values.iter().position(|c| c.to_json() == *v).map(|i| i as f64),
        Domain::Fixed { .. } => None,
    }
}

fn axis_name(name: &str, d: &Domain) -> String {
    match d {
        Domain::Float { log: true, .. } | Domain::Int { log: true, .. } => format!("log10({name})"),
        Domain::Choice { values, .. } => format!(
            "{name} ({})",
            values.iter().enumerate().map(|(i, v)| format!("{i}: {v}")).collect::<Vec<_>>().join(", ")
        ),
        _ => name.to_string(),
    }
}

fn figure(out: &mut String, id: &str, caption: &str, svg: &str) {
    let _ = writeln!(out, "<figure class=\"plot\" id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>", esc(caption));
}

fn shown(n: usize, total: usize) -> String {
    if n < total {
        format!(" ({n} of {total} trials drawn: an even choice, the best among them)")
    } else {
        String::new()
    }
}

/// The whole page.
pub fn report(s: &Snapshot, extra: &Extra) -> String {
    let spec = s.spec;
    let mut body = String::new();
    let best: Vec<u64> = s.best().into_iter().map(|b| b.0).collect();
    let obj = objective(s);
    let params: Vec<_> = spec.space.parameters.iter().filter(|p| p.is_searched()).collect();

    // Summary.
    let summary = s.summary();
    let _ = writeln!(body, "<h1>{}</h1>", esc(&spec.name));
    let _ = write!(body, "<section id=\"summary\"><table class=\"kv\">");
    let mut kv = |k: &str, v: String| {
        let _ = write!(body, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    };
    kv("objective", esc(&spec.goal.describe()));
    kv("trials", esc(&super::summary_line(spec, &summary)));
    kv("best", esc(&super::best_line(spec, &summary)));
    if let Some(b) = best.first().and_then(|i| s.trials.get(*i as usize)) {
        kv("best parameters", esc(&super::params_inline(&b.parameters)));
    }
    let starts = s.trials.iter().filter_map(|t| t.started_at.as_deref().and_then(time_of));
    let ends = s.trials.iter().filter_map(|t| t.completed_at.as_deref().and_then(time_of));
    if let (Some(a), Some(b)) = (starts.min(), ends.max()) {
        let secs = b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        kv("time spent", format!("{} s from the first start to the last end", num(secs)));
    }
    kv("workers", format!("{}", s.workers.len()));
    kv("report", esc(&extra.generated));
    body += "</table></section>\n";

    if let Some(o) = &obj {
        let (name, minimize) = (&o.name, o.minimize);
        // The trace: each value in trial order, the best so far over it.
        body += "<section><h2>Optimization trace</h2>\n";
        let fail_y = {
            let (lo, hi) = plots::range(o.values.values().copied());
            if minimize {
                hi
            } else {
                lo
            }
        };
        let all: Vec<(f64, f64, Mark)> = s
            .trials
            .iter()
            .filter(|t| t.status.is_terminal())
            .map(|t| {
                let m = mark_of(t, &best);
                let y = o.values.get(&t.index).copied().unwrap_or(fail_y);
                (t.index as f64, y, if o.values.contains_key(&t.index) { m } else { Mark::Failed })
            })
            .collect();
        let pts = thin(&all, MAX_POINTS, |p| p.2 == Mark::Best);
        let mut so_far: Vec<(f64, f64)> = Vec::new();
        let mut cur: Option<f64> = None;
        for t in s.trials.iter().filter(|t| t.status == TrialStatus::Completed && t.feasible == Some(true)) {
            if let Some(v) = o.values.get(&t.index) {
                if cur.is_none_or(|c| if minimize { *v < c } else { *v > c }) {
                    cur = Some(*v);
                }
                so_far.push((t.index as f64, cur.unwrap_or(*v)));
            }
        }
        let svg = plots::scatter(&format!("{name} by trial"), "trial", name, &pts, &[(so_far, plots::GREEN_)]);
        figure(
            &mut body,
            "trace",
            &format!(
                "Each trial's {name}; the line is the best so far. Green: best; blue: completed; orange rings: infeasible; purple: stopped early; red crosses: failed (drawn at the edge){}",
                shown(pts.len(), all.len())
            ),
            &svg,
        );
        body += "</section>\n";

        // One slice per parameter.
        body += "<section><h2>Slices</h2><div class=\"grid\">\n";
        let done: Vec<&Trial> = s.trials.iter().filter(|t| o.values.contains_key(&t.index)).collect();
        for p in &params {
            let all: Vec<(f64, f64, Mark)> = done
                .iter()
                .filter_map(|t| {
                    Some((coord(&p.domain, t.parameters.get(&p.name)?)?, o.values[&t.index], mark_of(t, &best)))
                })
                .collect();
            let pts = thin(&all, MAX_POINTS, |p| p.2 == Mark::Best);
            let svg = plots::scatter(&format!("{name} by {}", p.name), &axis_name(&p.name, &p.domain), name, &pts, &[]);
            figure(
                &mut body,
                &format!("slice-{}", p.name),
                &format!("{name} against {}{}", p.name, shown(pts.len(), all.len())),
                &svg,
            );
        }
        body += "</div></section>\n";

        // Parallel coordinates, coloured by rank.
        body += "<section><h2>Parallel coordinates</h2>\n";
        let mut ranked: Vec<(&Trial, f64)> = done.iter().map(|t| (*t, o.values[&t.index])).collect();
        ranked.sort_by(|a, b| if minimize { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) });
        let n = ranked.len().max(1) as f64;
        let lines_all: Vec<(Vec<f64>, f64)> = ranked
            .iter()
            .enumerate()
            .filter_map(|(k, (t, _))| {
                let ys: Option<Vec<f64>> = params
                    .iter()
                    .map(|p| t.parameters.get(&p.name).and_then(|v| p.to_unit(&crate::domain::Value::from_json(v)?)))
                    .collect();
                Some((ys?, k as f64 / n))
            })
            .collect();
        let lines = thin(&lines_all, MAX_LINES, |l| l.1 == 0.0);
        let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        let svg = plots::parallel("parameters of each trial, by rank", &names, &lines);
        figure(
            &mut body,
            "parallel",
            &format!(
                "Each line is a trial, each axis a parameter's range (bottom: low); green: best {name}, grey: worst{}",
                shown(lines.len(), lines_all.len())
            ),
            &svg,
        );
        body += "</section>\n";

        // The model: importance and a contour of the two most important parameters.
        body += "<section><h2>Parameter importance</h2>\n";
        if extra.importance.is_empty() {
            body += "<p>Too few completed trials for a model.</p>\n";
        } else {
            let svg = plots::bars("importance (1 / lengthscale of a GP of the objective)", "share", &extra.importance);
            figure(&mut body, "importance", "How fast the objective changes along each parameter, from the lengthscales of a Gaussian process fitted to the completed trials (at most 200 of them)", &svg);
        }
        if let Some(c) = &extra.contour {
            let (pa, pb) = (&spec.space.parameters[c.a], &spec.space.parameters[c.b]);
            let unit = |t: &Trial, p: &crate::domain::Parameter| {
                p.to_unit(&crate::domain::Value::from_json(t.parameters.get(&p.name)?)?)
            };
            let pts: Vec<(f64, f64)> =
                thin(&done, MAX_POINTS, |_| false).iter().filter_map(|t| Some((unit(t, pa)?, unit(t, pb)?))).collect();
            let svg = plots::contour(
                &format!("{name}: the model's mean over {} and {}", pa.name, pb.name),
                &format!("{} (0 to 1 over its range)", pa.name),
                &format!("{} (0 to 1 over its range)", pb.name),
                (0.0, 1.0),
                (0.0, 1.0),
                &c.grid,
                minimize,
                &pts,
            );
            figure(&mut body, "contour", &format!("The GP's predicted {name} over the two most important parameters, the others at the best trial's values; green is better; dots are trials"), &svg);
        }
        body += "</section>\n";

        // The Pareto front of the first two objectives.
        if spec.goal.objectives.len() >= 2 {
            let (o1, o2) = (&spec.goal.objectives[0], &spec.goal.objectives[1]);
            let v = |t: &Trial, o: &crate::domain::Objective| {
                let f = s.finals.get(&t.index)?;
                o.value(|m| f.get(m).map(|x| x.mean)).filter(|v| v.is_finite())
            };
            let all: Vec<(f64, f64, Mark)> = s
                .trials
                .iter()
                .filter(|t| t.status == TrialStatus::Completed)
                .filter_map(|t| Some((v(t, o1)?, v(t, o2)?, mark_of(t, &best))))
                .collect();
            let pts = thin(&all, MAX_POINTS, |p| p.2 == Mark::Best);
            let mut front: Vec<(f64, f64)> = all.iter().filter(|p| p.2 == Mark::Best).map(|p| (p.0, p.1)).collect();
            front.sort_by(|a, b| a.0.total_cmp(&b.0));
            body += "<section><h2>Pareto front</h2>\n";
            let svg = plots::scatter(
                &format!("{} against {}", o2.name, o1.name),
                &format!("{} ({})", o1.name, o1.verb()),
                &format!("{} ({})", o2.name, o2.verb()),
                &pts,
                &[(front, plots::GREEN_)],
            );
            figure(
                &mut body,
                "pareto",
                &format!(
                    "Completed trials; green: the Pareto front (no other trial is better in both){}",
                    shown(pts.len(), all.len())
                ),
                &svg,
            );
            body += "</section>\n";
        }
    }

    // Learning curves.
    if !extra.curves.is_empty() {
        let value = |t: &u64| obj.as_ref().and_then(|o| o.values.get(t).copied());
        let stopped = |t: &u64| s.trials.get(*t as usize).is_some_and(|t| t.status == TrialStatus::EarlyStopped);
        let mut order: Vec<u64> = extra.curves.keys().copied().collect();
        let minimize = obj.as_ref().is_none_or(|o| o.minimize);
        order.sort_by(|a, b| {
            let (va, vb) = (value(a).unwrap_or(f64::NAN), value(b).unwrap_or(f64::NAN));
            let k = |v: f64| {
                if v.is_nan() {
                    f64::INFINITY
                } else if minimize {
                    v
                } else {
                    -v
                }
            };
            k(va).total_cmp(&k(vb))
        });
        let total = order.len();
        let lines: Vec<(Vec<(f64, f64)>, bool)> =
            order.iter().take(MAX_CURVES).map(|t| (extra.curves[t].clone(), stopped(t))).collect();
        let n_stopped = extra.curves.keys().filter(|t| stopped(t)).count();
        body += "<section><h2>Learning curves</h2>\n";
        let svg = plots::curves(
            &format!("{} by progression", extra.curve_metric),
            "progression",
            &extra.curve_metric,
            &lines,
        );
        let more =
            if lines.len() < total { format!(" ({} of {total} drawn: the best)", lines.len()) } else { String::new() };
        figure(&mut body, "curves", &format!("Each trial's curve; red: the {n_stopped} stopped early{more}"), &svg);
        body += "</section>\n";
    }

    // The timeline: trials over wall time, a row per worker and slot.
    let t0 = s.trials.iter().filter_map(|t| t.started_at.as_deref().and_then(time_of)).min();
    if let Some(t0) = t0 {
        let secs = |x: &Option<String>| {
            x.as_deref().and_then(time_of).and_then(|t| t.duration_since(t0).ok()).map(|d| d.as_secs_f64())
        };
        let mut rows: Vec<(i64, i64)> = Vec::new();
        let mut spans_all: Vec<(usize, f64, f64, Mark)> = Vec::new();
        let now = s.trials.iter().filter_map(|t| secs(&t.completed_at)).fold(0.0, f64::max);
        for t in s.trials {
            let Some(a) = secs(&t.started_at) else { continue };
            let b = secs(&t.completed_at).unwrap_or(now);
            let key = (t.holder.unwrap_or(t.session), t.slot.map_or(-1, |x| x as i64));
            let row = match rows.iter().position(|r| *r == key) {
                Some(r) => r,
                None => {
                    rows.push(key);
                    rows.len() - 1
                }
            };
            let m = if t.status.is_terminal() { mark_of(t, &best) } else { Mark::Completed };
            spans_all.push((row, a, b, m));
        }
        let names: Vec<String> = rows
            .iter()
            .map(|(w, slot)| if *slot >= 0 { format!("worker {w} slot {slot}") } else { format!("worker {w}") })
            .collect();
        let spans = thin(&spans_all, MAX_POINTS, |p| p.3 == Mark::Best);
        body += "<section><h2>Timeline</h2>\n";
        let svg = plots::timeline("trials over wall time", &names, &spans);
        figure(
            &mut body,
            "timeline",
            &format!(
                "Each bar is a trial, from its start to its end, on the slot of the worker that ran it{}",
                shown(spans.len(), spans_all.len())
            ),
            &svg,
        );
        body += "</section>\n";
    }

    // Failures grouped by reason.
    // Reasons that differ only in their numbers are one group (as the failure-rate stop
    // groups them), shown by the first of them.
    let mut groups: BTreeMap<String, (String, Vec<u64>)> = BTreeMap::new();
    for t in s.trials.iter().filter(|t| matches!(t.status, TrialStatus::Failed | TrialStatus::Abandoned)) {
        let reason = t.reason.as_deref().unwrap_or("(no reason)");
        let first = reason.lines().next().unwrap_or("");
        let key: String = first.chars().filter(|c| !c.is_ascii_digit()).collect();
        groups.entry(key).or_insert_with(|| (reason.to_string(), Vec::new())).1.push(t.index);
    }
    body += "<section id=\"failures\"><h2>Failures</h2>\n";
    if groups.is_empty() {
        body += "<p>No trial failed.</p>\n";
    } else {
        body += "<table><thead><tr><th>trials</th><th>reason</th><th>examples</th></tr></thead><tbody>\n";
        let mut g: Vec<(String, Vec<u64>)> = groups.into_values().collect();
        g.sort_by_key(|x| std::cmp::Reverse(x.1.len()));
        for (reason, ts) in g {
            let ex: Vec<String> = ts.iter().take(8).map(|t| t.to_string()).collect();
            // The first line, and what follows it in the first trial's reason (stderr's tail).
            let (first, rest) = reason.split_once('\n').unwrap_or((&reason, ""));
            let reason = if rest.is_empty() { esc(first) } else { format!("{}<pre>{}</pre>", esc(first), esc(rest)) };
            let _ = writeln!(body, "<tr><td>{}</td><td>{reason}</td><td>{}</td></tr>", ts.len(), ex.join(", "));
        }
        body += "</tbody></table>\n";
    }
    body += "</section>\n";

    // Every trial.
    body += "<section><h2>Trials</h2><p class=\"hint\">Click a column to sort.</p>\n";
    body += &trials_table(s, &best);
    body += "</section>\n";

    let title = format!("optx report: {}", spec.name);
    PAGE.replace("{{title}}", &esc(&title)).replace("{{body}}", &body)
}

/// Trials up to this many are rows of the page itself (printable without JavaScript); more
/// are data that the page's script turns into rows as they are scrolled to, so that a
/// report of 10,000 trials opens as fast as one of 1,000.
const ROWS_IN_PAGE: usize = 1000;

fn trials_table(s: &Snapshot, best: &[u64]) -> String {
    let params: Vec<String> = s.spec.space.parameters.iter().map(|p| p.name.clone()).collect();
    let metrics = s.metric_names();
    // Each row: whether it is a best trial, and its cells as text.
    let rows: Vec<(bool, Vec<String>)> = s
        .trials
        .iter()
        .map(|t| {
            let status = if t.lost { "LOST" } else { t.status.as_str() };
            let mut cells = vec![t.index.to_string(), status.to_string(), t.generation.clone()];
            for p in &params {
                cells.push(
                    t.parameters
                        .get(p)
                        .map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Number(n) => n.as_f64().map(num).unwrap_or_else(|| n.to_string()),
                            other => other.to_string(),
                        })
                        .unwrap_or_default(),
                );
            }
            let f = s.finals.get(&t.index);
            for m in &metrics {
                cells.push(f.and_then(|f| f.get(m)).map(|o| num(o.mean)).unwrap_or_default());
            }
            cells.push(t.reason.as_deref().unwrap_or("").lines().next().unwrap_or("").to_string());
            (best.contains(&t.index), cells)
        })
        .collect();
    let mut out = String::with_capacity(s.trials.len() * 200);
    out += "<table id=\"trials\" class=\"sortable\"><thead><tr><th>#</th><th>status</th><th>generation</th>";
    for p in params.iter().chain(metrics.iter()) {
        let _ = write!(out, "<th>{}</th>", esc(p));
    }
    out += "<th>reason</th></tr></thead><tbody>\n";
    if rows.len() <= ROWS_IN_PAGE {
        for (is_best, cells) in &rows {
            out += if *is_best { "<tr class=\"best\">" } else { "<tr>" };
            for c in cells {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
            out += "</tr>\n";
        }
        out += "</tbody></table>\n";
        return out;
    }
    out += "</tbody></table>\n";
    let _ = writeln!(
        out,
        "<p id=\"trials-more\"><button type=\"button\" id=\"more\">show more</button> <button type=\"button\" id=\"all\">show all {}</button></p>",
        rows.len()
    );
    // As JSON in a script element: no `<`, `>` or `&` (they occur in strings only, and
    // become escapes there), so no text of a trial can close or confuse the element.
    let data: Vec<serde_json::Value> = rows.iter().map(|(b, c)| serde_json::json!([b, c])).collect();
    let json = serde_json::to_string(&data)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let _ = writeln!(out, "<script type=\"application/json\" id=\"trial-rows\">{json}</script>");
    out
}

const PAGE: &str = include_str!("page.html");
