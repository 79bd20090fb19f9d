//! The runner and metric of Ax's orchestration tutorial, as an optx plugin.
//!
//! `run_trial` computes Hartmann6 (and the L2 norm of the point) and writes both to
//! `hartmann6.json` in the trial dir; `poll_trial` says completed once `delay_seconds`
//! (config, default 5) have passed since; the metrics `hartmann6` and `l2norm` read the file.
//! Everything a trial needs is in its run metadata and its file, so trials survive a
//! restart of optx.
//!
//! For benchmarks under noise: `noise_sd` (config, default 0) adds Gaussian noise to the
//! value, drawn from the trial's parameters and `noise_seed` (so a run is repeatable), and
//! `report_sem` (default true) reports `noise_sd` as the value's SEM. The noise-free value
//! is kept as `hartmann6_true` in the trial's file, to judge what a method found.

use std::time::{SystemTime, UNIX_EPOCH};

use optx_plugin_api::{export_plugin, Error, Metric, Observation, OpenRequest, Poll, Runner, TrialContext};
use serde_json::{json, Value};

const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const P: [[f64; 6]; 4] = [
    [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
    [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
    [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
    [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
];

/// Hartmann6 on the unit cube (minimum -3.32237).
pub fn hartmann6(x: &[f64; 6]) -> f64 {
    let mut total = 0.0;
    for i in 0..4 {
        let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j] * 1e-4).powi(2)).sum();
        total -= ALPHA[i] * (-inner).exp();
    }
    total
}

const FILE: &str = "hartmann6.json";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub struct Hartmann6Runner {
    delay: f64,
    noise_sd: f64,
    noise_seed: u64,
    report_sem: bool,
}

/// A standard normal draw from `key` (splitmix64, then Box-Muller): the same key, the same
/// draw.
fn normal(key: u64) -> f64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(key), mix(key ^ 0xD1B5_4A32_D192_ED03));
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Runner for Hartmann6Runner {
    fn open(req: &OpenRequest) -> Result<Self, Error> {
        let delay = match req.config.get("delay_seconds") {
            None => 5.0,
            Some(v) => {
                v.as_f64().filter(|d| *d >= 0.0).ok_or("`delay_seconds` must be a number of seconds (0 or more)")?
            }
        };
        let noise_sd = match req.config.get("noise_sd") {
            None => 0.0,
            Some(v) => v.as_f64().filter(|d| *d >= 0.0).ok_or("`noise_sd` must be a number (0 or more)")?,
        };
        let noise_seed = req.config.get("noise_seed").and_then(Value::as_u64).unwrap_or(0);
        let report_sem = req.config.get("report_sem").and_then(Value::as_bool).unwrap_or(true);
        Ok(Hartmann6Runner { delay, noise_sd, noise_seed, report_sem })
    }

    fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error> {
        let mut x = [0.0; 6];
        for (i, xi) in x.iter_mut().enumerate() {
            let name = format!("x{}", i + 1);
            *xi = ctx.number(&name).ok_or_else(|| Error::new(format!("the parameter `{name}` is missing")))?;
        }
        let truth = hartmann6(&x);
        // The noise of this trial: drawn from its index and the seed.
        let key = ctx.trial_index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ self.noise_seed;
        let value = truth + self.noise_sd * normal(key);
        let sem = (self.noise_sd > 0.0 && self.report_sem).then_some(self.noise_sd);
        let l2norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let path = std::path::Path::new(&ctx.trial_dir).join(FILE);
        let text =
            json!({ "hartmann6": value, "hartmann6_sem": sem, "hartmann6_true": truth, "l2norm": l2norm }).to_string();
        std::fs::write(&path, text).map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(json!({ "trial_dir": ctx.trial_dir, "started": now(), "delay": self.delay }))
    }

    fn poll_trial(&self, _trial_index: u64, metadata: &Value) -> Result<Poll, Error> {
        let started = metadata["started"].as_f64().ok_or("the run metadata has no `started` time")?;
        let delay = metadata["delay"].as_f64().unwrap_or(self.delay);
        Ok(if now() - started >= delay { Poll::completed() } else { Poll::running() })
    }

    fn stop_trial(&self, _trial_index: u64, _metadata: &Value, reason: &str) -> Result<Value, Error> {
        // Nothing runs anywhere: the value was computed at once; stopping only records why.
        Ok(json!({ "stopped": reason }))
    }
}

/// Reads one value (its own name: `hartmann6` or `l2norm`) from the trial's file.
pub struct FileMetric {
    key: String,
}

impl Metric for FileMetric {
    fn open(req: &OpenRequest) -> Result<Self, Error> {
        Ok(FileMetric { key: req.name.clone() })
    }

    fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
        let dir = metadata["trial_dir"].as_str().ok_or("the run metadata has no `trial_dir`")?;
        let path = std::path::Path::new(dir).join(FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        let mean =
            v[&self.key].as_f64().ok_or_else(|| Error::new(format!("{} has no `{}`", path.display(), self.key)))?;
        Ok(vec![match v[format!("{}_sem", self.key)].as_f64() {
            Some(sem) => Observation::new(mean).with_sem(sem),
            None => Observation::new(mean),
        }])
    }
}

export_plugin! {
    name: "hartmann6",
    version: env!("CARGO_PKG_VERSION"),
    runners: ["hartmann6" => Hartmann6Runner],
    metrics: ["hartmann6" => FileMetric, "l2norm" => FileMetric],
}

#[cfg(test)]
mod tests {
    use super::*;
    use optx_plugin_api::host::Plugin;
    use optx_plugin_api::Status;

    #[test]
    fn the_optimum_is_where_the_literature_says() {
        let x = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&x) + 3.32237).abs() < 1e-4);
    }

    #[test]
    fn a_trial_completes_after_its_delay_and_its_metrics_read_the_file() {
        // SAFETY: this crate's own entry point.
        let p = unsafe { Plugin::from_entry(optx_plugin_v1) }.unwrap();
        let dir = std::env::temp_dir().join(format!("optx-h6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ctx = TrialContext {
            trial_index: 0,
            parameters: json!({"x1": 0.5, "x2": 0.5, "x3": 0.5, "x4": 0.5, "x5": 0.5, "x6": 0.5})
                .as_object()
                .unwrap()
                .clone(),
            trial_dir: dir.to_string_lossy().into_owned(),
            experiment: "t".into(),
            slot: 0,
            config: json!({}),
        };
        let slow = p.open_runner("hartmann6", &json!({"delay_seconds": 60}), "t").unwrap();
        let meta = slow.run_trial(&ctx).unwrap();
        assert_eq!(slow.poll_trial(0, &meta).unwrap().status, Status::Running);
        let fast = p.open_runner("hartmann6", &json!({"delay_seconds": 0}), "t").unwrap();
        let meta = fast.run_trial(&ctx).unwrap();
        assert_eq!(fast.poll_trial(0, &meta).unwrap().status, Status::Completed);
        let h = p.open_metric("hartmann6", &json!({}), "t").unwrap().fetch(0, &meta).unwrap();
        assert!((h[0].mean - hartmann6(&[0.5; 6])).abs() < 1e-12);
        let n = p.open_metric("l2norm", &json!({}), "t").unwrap().fetch(0, &meta).unwrap();
        assert!((n[0].mean - 6f64.sqrt() * 0.5).abs() < 1e-12);
        assert!(p.open_runner("hartmann6", &json!({"delay_seconds": -1}), "t").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
