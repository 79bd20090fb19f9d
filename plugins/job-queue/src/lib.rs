//! The mock job queue of Ax's Scheduler tutorial, as an optx plugin.
//!
//! Trials become jobs with an id in an in-process queue; on every poll a running job stays
//! running or completes at random (seeded by `seed` in the config, so runs repeat); the
//! outcome of a completed job is Branin at its parameters. The runner polls all jobs in
//! one `poll_trials` call, schedules many in one `run_trials` call, and says how many more
//! jobs fit (`max_jobs`, optional).
//!
//! The queue stands for a service outside optx: when optx restarts, a job that it no
//! longer knows is adopted again from the run metadata.

use std::collections::HashMap;
use std::sync::Mutex;

use optx_plugin_api::{
    export_plugin, Error, Metric, Observation, OpenRequest, Poll, Runner, TrialContext, TrialPoll, TrialRef,
};
use serde_json::{json, Value};

/// Branin on x1 in [-5, 10], x2 in [0, 15] (minimum 0.397887).
pub fn branin(x1: f64, x2: f64) -> f64 {
    let pi = std::f64::consts::PI;
    let (a, b, c, r, s, t) = (1.0, 5.1 / (4.0 * pi * pi), 5.0 / pi, 6.0, 10.0, 1.0 / (8.0 * pi));
    a * (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
}

#[derive(Debug, Clone)]
struct Job {
    x1: f64,
    x2: f64,
    polls: u64,
    done: bool,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    jobs: HashMap<u64, Job>,
}

/// The queue service: one per process, like the tutorial's client singleton.
static QUEUE: Mutex<Option<Queue>> = Mutex::new(None);

fn with_queue<T>(f: impl FnOnce(&mut Queue) -> T) -> T {
    let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    f(q.get_or_insert_with(Queue::default))
}

/// A seeded coin: splitmix64 of (seed, job, poll).
fn coin(seed: u64, job: u64, poll: u64) -> f64 {
    let mut z = seed ^ job.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ poll.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn job_of(metadata: &Value) -> Result<(u64, f64, f64), Error> {
    let id = metadata["job_id"].as_u64().ok_or("the run metadata has no `job_id`")?;
    let x1 = metadata["x1"].as_f64().ok_or("the run metadata has no `x1`")?;
    let x2 = metadata["x2"].as_f64().ok_or("the run metadata has no `x2`")?;
    Ok((id, x1, x2))
}

pub struct JobQueueRunner {
    seed: u64,
    /// Chance that a running job completes at a poll.
    p_complete: f64,
    max_jobs: Option<usize>,
}

impl JobQueueRunner {
    fn status(&self, metadata: &Value) -> Result<Poll, Error> {
        let (id, x1, x2) = job_of(metadata)?;
        Ok(with_queue(|q| {
            let job = q.jobs.entry(id).or_insert(Job { x1, x2, polls: 0, done: false });
            if !job.done {
                job.polls += 1;
                job.done = coin(self.seed, id, job.polls) < self.p_complete;
            }
            if job.done {
                Poll::completed()
            } else {
                Poll::running()
            }
        }))
    }
}

impl Runner for JobQueueRunner {
    fn open(req: &OpenRequest) -> Result<Self, Error> {
        let c = &req.config;
        let seed = c.get("seed").map_or(Some(0), Value::as_u64).ok_or("`seed` must be a non-negative integer")?;
        let p_complete = c
            .get("completion_probability")
            .map_or(Some(0.5), Value::as_f64)
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .ok_or("`completion_probability` must be in (0, 1]")?;
        let max_jobs = match c.get("max_jobs") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or("`max_jobs` must be a positive integer")? as usize),
        };
        Ok(JobQueueRunner { seed, p_complete, max_jobs })
    }

    fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error> {
        let x1 = ctx.number("x1").ok_or("the parameter `x1` is missing")?;
        let x2 = ctx.number("x2").ok_or("the parameter `x2` is missing")?;
        let id = with_queue(|q| {
            // Ids continue after any job adopted from an earlier run of optx.
            q.next_id = q.next_id.max(q.jobs.keys().max().map_or(0, |m| m + 1)).max(ctx.trial_index);
            let id = q.next_id;
            q.next_id += 1;
            q.jobs.insert(id, Job { x1, x2, polls: 0, done: false });
            id
        });
        Ok(json!({ "job_id": id, "x1": x1, "x2": x2 }))
    }

    fn poll_trial(&self, _trial_index: u64, metadata: &Value) -> Result<Poll, Error> {
        self.status(metadata)
    }

    fn run_trials(&self, contexts: &[TrialContext]) -> Result<Vec<Value>, Error> {
        contexts.iter().map(|c| self.run_trial(c)).collect()
    }

    fn poll_trials(&self, trials: &[TrialRef]) -> Result<Vec<TrialPoll>, Error> {
        trials.iter().map(|t| Ok(TrialPoll { trial_index: t.trial_index, poll: self.status(&t.metadata)? })).collect()
    }

    fn stop_trial(&self, _trial_index: u64, metadata: &Value, reason: &str) -> Result<Value, Error> {
        let (id, ..) = job_of(metadata)?;
        with_queue(|q| q.jobs.remove(&id));
        Ok(json!({ "cancelled_job": id, "reason": reason }))
    }

    fn available_capacity(&self) -> Result<Option<usize>, Error> {
        Ok(self.max_jobs.map(|max| with_queue(|q| max.saturating_sub(q.jobs.values().filter(|j| !j.done).count()))))
    }
}

/// Branin at a completed job's parameters.
pub struct BraninMetric;

impl Metric for BraninMetric {
    fn open(_req: &OpenRequest) -> Result<Self, Error> {
        Ok(BraninMetric)
    }

    fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
        let (id, x1, x2) = job_of(metadata)?;
        // The queue's record of the job wins; a job it no longer knows is read from the metadata.
        match with_queue(|q| q.jobs.get(&id).map(|j| (j.done, j.x1, j.x2))) {
            Some((false, ..)) => Err(Error::transient(format!("job {id} has not completed yet"))),
            Some((true, a, b)) => Ok(vec![Observation::new(branin(a, b))]),
            None => Ok(vec![Observation::new(branin(x1, x2))]),
        }
    }
}

/// A learning curve of a job, a point per poll it has seen so far (while it runs too):
/// `branin + 10 / k` at progression `k`, the last one at its end.
pub struct CurveMetric;

impl Metric for CurveMetric {
    fn open(_req: &OpenRequest) -> Result<Self, Error> {
        Ok(CurveMetric)
    }

    fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
        let (id, ..) = job_of(metadata)?;
        let Some((polls, x1, x2)) = with_queue(|q| q.jobs.get(&id).map(|j| (j.polls, j.x1, j.x2))) else {
            return Err(Error::new(format!("the queue has no job {id}")));
        };
        Ok((1..=polls).map(|k| Observation::new(branin(x1, x2) + 10.0 / k as f64).at(k as f64)).collect())
    }
}

export_plugin! {
    name: "job-queue",
    version: env!("CARGO_PKG_VERSION"),
    runners: ["job-queue" => JobQueueRunner],
    metrics: ["branin" => BraninMetric, "curve" => CurveMetric],
}

#[cfg(test)]
mod tests {
    use super::*;
    use optx_plugin_api::host::Plugin;
    use optx_plugin_api::Status;

    fn ctx(i: u64, x1: f64, x2: f64) -> TrialContext {
        TrialContext {
            trial_index: i,
            parameters: json!({"x1": x1, "x2": x2}).as_object().unwrap().clone(),
            trial_dir: String::new(),
            experiment: "t".into(),
            slot: 0,
            config: json!({}),
        }
    }

    #[test]
    fn branin_has_its_three_minima() {
        for (x1, x2) in [(-std::f64::consts::PI, 12.275), (std::f64::consts::PI, 2.275), (9.42478, 2.475)] {
            assert!((branin(x1, x2) - 0.397887).abs() < 1e-5);
        }
    }

    #[test]
    fn jobs_complete_at_random_but_repeatably_and_are_polled_in_one_call() {
        // SAFETY: this crate's own entry point.
        let p = unsafe { Plugin::from_entry(optx_plugin_v1) }.unwrap();
        let r = p.open_runner("job-queue", &json!({"seed": 3, "max_jobs": 3}), "t").unwrap();
        let metas: Vec<Value> = (0..3).map(|i| r.run_trial(&ctx(100 + i, 1.0, 2.0)).unwrap()).collect();
        assert_eq!(r.available_capacity().unwrap(), Some(0));
        let refs: Vec<TrialRef> =
            metas.iter().enumerate().map(|(i, m)| TrialRef { trial_index: i as u64, metadata: m.clone() }).collect();
        let mut polls = 0;
        while r.poll_trials(&refs).unwrap().iter().any(|t| t.poll.status != Status::Completed) {
            polls += 1;
            assert!(polls < 100);
        }
        assert_eq!(r.available_capacity().unwrap(), Some(3));
        let m = p.open_metric("branin", &json!({}), "t").unwrap();
        assert_eq!(m.fetch(0, &metas[0]).unwrap()[0].mean, branin(1.0, 2.0));
        // The same seed and job give the same coins.
        assert_eq!(coin(3, 5, 1), coin(3, 5, 1));
        assert_ne!(coin(3, 5, 1), coin(4, 5, 1));
    }
}
