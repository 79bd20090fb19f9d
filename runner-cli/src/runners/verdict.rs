//! The completion verdict, the same for every runner: a trial that ended well is COMPLETED
//! when every objective and constrained metric was reported with a finite value, and FAILED
//! with the reason otherwise.

use std::collections::BTreeMap;

use super::{MetricPoint, Outcome};

/// The problem of a metric whose fetch failed for good (after its retries).
pub fn fetch_failed(metric: &str, detail: &str) -> String {
    format!("metric `{metric}`: fetch failed{detail}")
}

/// The outcome of a trial that ended well, from the final values read (`finals`) and the
/// problems met reading them. `looked` says where the metrics were looked for, `after`
/// comes at the end of the reason of missing metrics (what the trial printed, say), given
/// the missing ones. A problem beside a completion becomes its note.
pub fn verdict(
    required: &[String],
    finals: &BTreeMap<String, MetricPoint>,
    problems: &[String],
    looked: &str,
    after: &dyn Fn(&[&String]) -> String,
) -> (Outcome, Option<String>) {
    let missing: Vec<&String> = required.iter().filter(|m| !finals.contains_key(*m)).collect();
    let nonfinite = required
        .iter()
        .filter_map(|m| finals.get(m))
        .find(|p| !p.mean.is_finite())
        .map(|p| format!("metric `{}` is not finite ({})", p.metric, p.mean));
    let failed = |reason: String| (Outcome::Failed { reason, lost: false }, None);
    // A metric that could not be fetched says nothing about the trial: it is abandoned, as
    // Ax abandons a trial whose data cannot be fetched (not a failure of its arm).
    let unfetched = missing.iter().find_map(|m| problems.iter().find(|p| p.starts_with(&fetch_failed(m, ""))));
    if let Some(p) = unfetched {
        (Outcome::Abandoned { reason: p.clone() }, None)
    } else if let Some(p) = problems.first().filter(|_| !missing.is_empty()) {
        failed(p.clone())
    } else if !missing.is_empty() {
        let names = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        failed(format!("metric {names} was not reported (looked in {looked}){}", after(&missing)))
    } else if let Some(nf) = nonfinite {
        failed(nf)
    } else {
        (Outcome::Completed, problems.first().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(metric: &str, mean: f64) -> (String, MetricPoint) {
        (metric.to_string(), MetricPoint { metric: metric.into(), progression: None, mean, sem: None })
    }

    #[test]
    fn completes_only_with_every_required_metric_finite() {
        let required = vec!["loss".to_string(), "mem".to_string()];
        let all: BTreeMap<_, _> = [point("loss", 0.3), point("mem", 2.0)].into();
        assert_eq!(verdict(&required, &all, &[], "x", &|_| String::new()), (Outcome::Completed, None));
        let note = verdict(&required, &all, &["metric `extra`: fetch failed".into()], "x", &|_| String::new());
        assert_eq!(note, (Outcome::Completed, Some("metric `extra`: fetch failed".into())));

        let some: BTreeMap<_, _> = [point("loss", 0.3)].into();
        let (o, _) = verdict(&required, &some, &[], "result.json", &|_| "; stderr ends with: boom".into());
        assert_eq!(
            o,
            Outcome::Failed {
                reason: "metric `mem` was not reported (looked in result.json); stderr ends with: boom".into(),
                lost: false
            }
        );
        // A problem met reading a missing metric is the better reason.
        let (o, _) = verdict(&required, &some, &["cannot read mem.json".into()], "x", &|_| String::new());
        assert_eq!(o, Outcome::Failed { reason: "cannot read mem.json".into(), lost: false });

        // A required metric whose fetch failed for good: abandoned.
        let (o, _) =
            verdict(&required, &some, &[fetch_failed("mem", " 5 times, last: timeout")], "x", &|_| String::new());
        assert_eq!(o, Outcome::Abandoned { reason: "metric `mem`: fetch failed 5 times, last: timeout".into() });
        let nan: BTreeMap<_, _> = [point("loss", f64::NAN), point("mem", 1.0)].into();
        let (o, _) = verdict(&required, &nan, &[], "x", &|_| String::new());
        assert_eq!(o, Outcome::Failed { reason: "metric `loss` is not finite (NaN)".into(), lost: false });
    }
}
