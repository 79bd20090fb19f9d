//! The output protocol: how a trial reports metrics on stdout and in files.
//!
//! Per stdout line: a whole JSON object (once trimmed), else `name=value` tokens; a
//! `[metrics.X]` regex replaces both for its metric. The result file and `file`+`pointer`
//! rules are read when the trial ends and win over what was printed. Only metric names
//! the experiment uses, and the progression key, are kept.

use std::collections::BTreeMap;

use crate::domain::MetricRule;

/// One reported value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub metric: String,
    pub progression: Option<f64>,
    pub mean: f64,
    pub sem: Option<f64>,
}

/// Reads reports line by line and remembers the last value of each metric.
pub struct OutputParser {
    default_metrics: Vec<String>,
    regex_metrics: Vec<(String, regex::Regex)>,
    progression: String,
    pub last: BTreeMap<String, MetricPoint>,
}

/// Read what a trial left in its dir: `result.json` (final values that win over anything
/// printed) and the `file` + `pointer` rules.
pub fn read_result_files(
    dir: &std::path::Path,
    metrics: &BTreeMap<String, MetricRule>,
    required: &[String],
    finals: &mut BTreeMap<String, MetricPoint>,
    problems: &mut Vec<String>,
) {
    if let Ok(text) = std::fs::read_to_string(dir.join("result.json")) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(obj)) => {
                for name in metrics.keys() {
                    if let Some((mean, sem)) = obj.get(name).and_then(json_value) {
                        let progression = finals.get(name).and_then(|p| p.progression);
                        finals.insert(name.clone(), MetricPoint { metric: name.clone(), progression, mean, sem });
                    }
                }
            }
            _ => problems.push("the result file (result.json) is not a JSON object".into()),
        }
    }
    for (name, rule) in metrics {
        if let MetricRule::File { path, pointer } = rule {
            match std::fs::read_to_string(dir.join(path)) {
                Ok(text) => match pointer_value(&text, pointer) {
                    Ok((mean, sem)) => {
                        finals.insert(name.clone(), MetricPoint { metric: name.clone(), progression: None, mean, sem });
                    }
                    Err(e) => problems.push(format!("metric `{name}`: {path}: {e}")),
                },
                Err(_) if required.contains(name) => {
                    problems.push(format!("metric `{name}`: the trial wrote no {path}"))
                }
                Err(_) => {}
            }
        }
    }
}

/// Read a reported value: a number, `[mean, sem]`, `{"mean": m, "sem": s}`, or a string
/// such as "nan" (kept, so that a non-finite value fails the trial with that reason).
pub fn json_value(v: &serde_json::Value) -> Option<(f64, Option<f64>)> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(|m| (m, None)),
        serde_json::Value::String(s) => parse_number(s).map(|m| (m, None)),
        serde_json::Value::Array(a) if a.len() == 2 => Some((json_value(&a[0])?.0, Some(json_value(&a[1])?.0))),
        serde_json::Value::Object(o) => {
            Some((json_value(o.get("mean")?)?.0, o.get("sem").and_then(json_value).map(|x| x.0)))
        }
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim().trim_end_matches([',', ';']);
    match t.to_ascii_lowercase().as_str() {
        "nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// Parse a line that is one whole JSON object; Python's `NaN`/`Infinity` are accepted.
fn json_object(line: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let t = line.trim();
    if !(t.starts_with('{') && t.ends_with('}')) {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(t) {
        Ok(serde_json::Value::Object(o)) => Some(o),
        Ok(_) => None,
        Err(_) if t.contains("NaN") || t.contains("Infinity") => {
            let fixed = t.replace("-Infinity", "\"-inf\"").replace("Infinity", "\"inf\"").replace("NaN", "\"nan\"");
            match serde_json::from_str::<serde_json::Value>(&fixed) {
                Ok(serde_json::Value::Object(o)) => Some(o),
                _ => None,
            }
        }
        Err(_) => None,
    }
}

impl OutputParser {
    pub fn new(metrics: &BTreeMap<String, MetricRule>, progression: &str) -> Self {
        let mut default_metrics = Vec::new();
        let mut regex_metrics = Vec::new();
        for (name, rule) in metrics {
            match rule {
                MetricRule::Default => default_metrics.push(name.clone()),
                MetricRule::Regex(r) => regex_metrics.push((name.clone(), r.clone())),
                MetricRule::File { .. } | MetricRule::Plugin(_) => {}
            }
        }
        OutputParser { default_metrics, regex_metrics, progression: progression.to_string(), last: BTreeMap::new() }
    }

    /// The points one stdout line reports (also remembered as the last values).
    pub fn line(&mut self, line: &str) -> Vec<MetricPoint> {
        let mut found: Vec<(String, f64, Option<f64>)> = Vec::new();
        let mut progression = None;
        if !self.default_metrics.is_empty() {
            if let Some(obj) = json_object(line) {
                progression = obj.get(&self.progression).and_then(json_value).map(|x| x.0);
                for m in &self.default_metrics {
                    if let Some((mean, sem)) = obj.get(m).and_then(json_value) {
                        found.push((m.clone(), mean, sem));
                    }
                }
            } else if line.contains('=') {
                for tok in line.split_whitespace() {
                    let Some((k, v)) = tok.split_once('=') else { continue };
                    if k == self.progression {
                        progression = parse_number(v).or(progression);
                    } else if self.default_metrics.iter().any(|m| m == k) {
                        if let Some(x) = parse_number(v) {
                            found.retain(|(m, _, _)| m != k);
                            found.push((k.to_string(), x, None));
                        }
                    }
                }
            }
        }
        for (name, re) in &self.regex_metrics {
            if let Some(x) = re.captures(line).and_then(|c| c.get(1)).and_then(|m| parse_number(m.as_str())) {
                found.push((name.clone(), x, None));
            }
        }
        found
            .into_iter()
            .map(|(metric, mean, sem)| {
                let p = MetricPoint { metric, progression, mean, sem };
                self.last.insert(p.metric.clone(), p.clone());
                p
            })
            .collect()
    }
}

/// Read a file the trial wrote and take the value at a JSON pointer.
pub fn pointer_value(text: &str, pointer: &str) -> Result<(f64, Option<f64>), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let at = v.pointer(pointer).ok_or_else(|| format!("nothing at pointer `{pointer}`"))?;
    json_value(at).ok_or_else(|| format!("the value at `{pointer}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> OutputParser {
        let mut m = BTreeMap::new();
        m.insert("val_loss".to_string(), MetricRule::Default);
        m.insert("acc".to_string(), MetricRule::Default);
        m.insert("lat".to_string(), MetricRule::Regex(regex::Regex::new(r"latency: ([0-9.]+) ms").unwrap()));
        OutputParser::new(&m, "step")
    }

    #[test]
    fn json_lines_report_values_pairs_and_progressions() {
        let mut p = parser();
        let pts = p.line(r#"  {"val_loss": 0.31, "acc": [0.9, 0.01], "step": 3, "other": 1}  "#);
        assert_eq!(pts.len(), 2);
        let get = |m: &str| pts.iter().find(|p| p.metric == m).unwrap().clone();
        assert_eq!(
            get("val_loss"),
            MetricPoint { metric: "val_loss".into(), progression: Some(3.0), mean: 0.31, sem: None }
        );
        assert_eq!(get("acc").sem, Some(0.01));
    }

    #[test]
    fn a_json_object_with_text_around_it_is_not_a_report() {
        let mut p = parser();
        assert!(p.line(r#"INFO {"val_loss": 0.31}"#).is_empty());
    }

    #[test]
    fn name_value_tokens_are_read_anywhere_in_a_line() {
        let mut p = parser();
        let pts = p.line("Epoch 3: step=3 val_loss=0.31, acc=nan unknown=4");
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].mean, pts[0].progression), (0.31, Some(3.0)));
        assert!(pts[1].mean.is_nan());
        assert_eq!(p.last["val_loss"].mean, 0.31);
    }

    #[test]
    fn a_regex_rule_reads_its_metric_and_python_nan_is_understood() {
        let mut p = parser();
        assert_eq!(p.line("done, latency: 12.5 ms")[0].mean, 12.5);
        assert!(p.line(r#"{"val_loss": NaN}"#)[0].mean.is_nan());
        assert!(p.line("garbage \u{1} {{{ ===").is_empty());
    }

    #[test]
    fn pointers_reach_into_files() {
        assert_eq!(pointer_value(r#"{"m": {"loss": 0.5}}"#, "/m/loss").unwrap(), (0.5, None));
        assert!(pointer_value(r#"{"m": 1}"#, "/x").unwrap_err().contains("nothing at"));
    }
}
