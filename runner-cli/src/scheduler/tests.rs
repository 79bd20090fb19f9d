//! The scheduler with a fake runner: accounting without processes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::*;
use crate::domain::{ExperimentSpec, TrialStatus};
use crate::runners::{Control, MetricPoint, Outcome, RunnerEvent, TrialJob, TrialResult, TrialRunner};
use crate::store::{Ledger, LedgerExt, SqliteStore};

/// What the fake does with a trial: complete with f = x, fail, or lose it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    Complete,
    Fail,
    Lose,
}

struct FakeRunner {
    /// Decides from the trial index, how many trials ran before it, and its x.
    fate: Box<dyn Fn(u64, usize, f64) -> Fate + Send + Sync>,
    calls: Mutex<usize>,
}

impl TrialRunner for FakeRunner {
    fn execute(&self, job: TrialJob, _control: &Receiver<Control>, events: &Sender<RunnerEvent>) {
        let n = {
            let mut c = self.calls.lock().unwrap();
            *c += 1;
            *c - 1
        };
        let _ = events.send(RunnerEvent::Deployed { index: job.index, run_metadata: serde_json::json!({"fake": n}) });
        let x = job.arm.get("x").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let f = MetricPoint { metric: "f".into(), progression: None, mean: x, sem: None };
        let outcome = match (self.fate)(job.index, n, x) {
            Fate::Complete => Outcome::Completed,
            Fate::Fail => Outcome::Failed { reason: "fake failure".into(), lost: false },
            Fate::Lose => Outcome::Failed { reason: "fake loss".into(), lost: true },
        };
        let finals = if outcome == Outcome::Completed { vec![f] } else { vec![] };
        let result = TrialResult { outcome, finals, curve: vec![], stop_metadata: None, note: None };
        let _ = events.send(RunnerEvent::Finished { index: job.index, result });
    }
    fn cleanup(&self, _: &Path, _: bool) {}
    fn close(&self) {}
}

#[derive(Default)]
struct Sink(Vec<RunEvent>);

impl EventSink for Sink {
    fn event(&mut self, e: &RunEvent) {
        self.0.push(e.clone());
    }
}

fn spec(dir: &Path, orchestration: &str) -> ExperimentSpec {
    let src = format!(
        "[experiment]\nname = \"fake\"\n[parameters]\nx = {{ type = \"float\", bounds = [0.0, 1.0] }}\n\
         [objective]\nminimize = \"f\"\n[runner]\ncommand = \"true\"\n[orchestration]\n{orchestration}\n"
    );
    crate::config::parse(&src, "fake.toml", dir).unwrap()
}

fn run(
    spec: &ExperimentSpec,
    store: &mut dyn Ledger,
    fate: impl Fn(u64, usize, f64) -> Fate + Send + Sync + 'static,
) -> (RunEnd, Vec<RunEvent>) {
    let runner = Arc::new(FakeRunner { fate: Box::new(fate), calls: Mutex::new(0) });
    let mut sink = Sink::default();
    let (_tx, signals) = unbounded();
    let interrupts = Interrupts { signals, flag: Arc::default() };
    let me = crate::store::NewWorker { command: "test", pid: 1, process_start: None, host: "h", lease_seconds: 60.0 };
    let session = store.join(&me, false, &|_| true).unwrap();
    let end = drive(spec, store, runner, 42, session, &mut sink, &interrupts).unwrap();
    store.leave(session, Some(0)).unwrap();
    (end, sink.0)
}

fn setup(orchestration: &str) -> (tempfile::TempDir, ExperimentSpec, SqliteStore) {
    let d = tempfile::tempdir().unwrap();
    let spec = spec(d.path(), orchestration);
    let store = SqliteStore::open(spec.store.file().unwrap(), spec.durability).unwrap();
    (d, spec, store)
}

#[test]
fn a_run_ends_with_max_trials_completed_and_the_best_found() {
    let (_d, spec, mut store) = setup("max_trials = 7\nparallelism = 3");
    let (end, events) = run(&spec, &mut store, |_, _, _| Fate::Complete);
    assert_eq!(end, RunEnd::Done);
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 7);
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed && t.feasible == Some(true)));
    let best = store.best(&spec.goal).unwrap();
    let min = trials.iter().map(|t| t.parameters["x"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert_eq!(best.len(), 1);
    assert_eq!(best[0].1, vec![min]);
    let announced = events.iter().filter(|e| matches!(e, RunEvent::Completed { best: true, .. })).count();
    assert!(announced >= 1);
}

#[test]
fn lost_trials_do_not_count_and_their_arms_run_again() {
    let (_d, spec, mut store) = setup("max_trials = 5\nparallelism = 1");
    // The first deployment of trial 1 is lost.
    let (end, _) = run(&spec, &mut store, |i, n, _| if i == 1 && n == 1 { Fate::Lose } else { Fate::Complete });
    assert_eq!(end, RunEnd::Done);
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 6);
    assert_eq!(trials.iter().filter(|t| !t.lost).count(), 5);
    let rerun = trials.iter().find(|t| t.rerun_of == Some(1)).unwrap();
    assert_eq!(rerun.generation, "rerun");
    assert_eq!(rerun.parameters, trials[1].parameters);
    assert_eq!(rerun.status, TrialStatus::Completed);
}

#[test]
fn retries_are_real_trials_that_count() {
    let (_d, spec, mut store) = setup("max_trials = 4\nretries_per_failed_arm = 2\ntolerated_trial_failure_rate = 1.0");
    // The center arm (x = 0.5, trial 0) always fails: it runs three times in all.
    let (end, _) = run(&spec, &mut store, |_, _, x| if x == 0.5 { Fate::Fail } else { Fate::Complete });
    assert_eq!(end, RunEnd::Done);
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 4, "retries count toward max_trials");
    assert_eq!(trials.iter().map(|t| t.generation.as_str()).collect::<Vec<_>>(), ["center", "retry", "retry", "sobol"]);
    assert_eq!(trials.iter().map(|t| t.attempt).collect::<Vec<_>>(), [1, 2, 3, 1]);
    assert_eq!((trials[1].rerun_of, trials[2].rerun_of), (Some(0), Some(1)));
    assert!(trials[..3].iter().all(|t| t.status == TrialStatus::Failed && !t.lost));
    assert_eq!(trials[3].status, TrialStatus::Completed);
}

#[test]
fn too_many_failures_end_the_run_early() {
    let (_d, spec, mut store) = setup("max_trials = 50\nparallelism = 2\nmin_failed_trials_for_failure_rate_check = 4");
    let (end, events) = run(&spec, &mut store, |_, _, _| Fate::Fail);
    assert_eq!(end, RunEnd::FailureRate);
    let n = store.trials().unwrap().len();
    assert!((4..=6).contains(&n), "{n}");
    assert!(events.iter().any(|e| matches!(e, RunEvent::Notice(m) if m.contains("tolerated_trial_failure_rate"))));
}

#[test]
fn a_resumed_run_proposes_what_an_uninterrupted_one_would() {
    let (_d, spec, mut store) = setup("max_trials = 8");
    run(&spec, &mut store, |_, _, _| Fate::Complete);
    let whole: Vec<serde_json::Value> = store.trials().unwrap().into_iter().map(|t| t.parameters).collect();

    let (_d2, mut spec2, mut store2) = setup("max_trials = 3");
    run(&spec2, &mut store2, |_, _, _| Fate::Complete);
    spec2.orchestration.max_trials = 8;
    run(&spec2, &mut store2, |_, _, _| Fate::Complete);
    let parts: Vec<serde_json::Value> = store2.trials().unwrap().into_iter().map(|t| t.parameters).collect();
    assert_eq!(parts, whole);
}

#[test]
fn a_trial_that_ends_while_others_are_proposed_is_applied_before_the_next_proposal() {
    // Two slots, both taken; trial 0 ends while the round that follows is under way (its
    // events arrive through `arrived`, not in the round's batch): it is completed and its
    // slot refilled in that same round, rather than on the next wake-up.
    let (_d, spec, mut store) = setup("max_trials = 3\nparallelism = 2");
    let me = crate::store::NewWorker { command: "test", pid: 1, process_start: None, host: "h", lease_seconds: 60.0 };
    let session = store.join(&me, false, &|_| true).unwrap();
    let runner = FakeRunner { fate: Box::new(|_, _, _| Fate::Complete), calls: Mutex::new(0) };
    let mut st = state::State::load(&spec, &mut store, 42, session, Arc::default()).unwrap();
    store.tx(|tx| st.reconcile(tx, &runner)).unwrap();
    assert_eq!(store.trials().unwrap().len(), 2, "no room for a third");
    let mut later = vec![
        RunnerEvent::Deployed { index: 0, run_metadata: serde_json::json!({}) },
        RunnerEvent::Finished {
            index: 0,
            result: TrialResult {
                outcome: Outcome::Completed,
                finals: vec![MetricPoint { metric: "f".into(), progression: None, mean: 0.5, sem: None }],
                curve: vec![],
                stop_metadata: None,
                note: None,
            },
        },
    ];
    let mut asked = 0;
    store
        .tx(|tx| {
            st.apply(tx, vec![], &mut || {
                asked += 1;
                std::mem::take(&mut later)
            })
        })
        .unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials[0].status, TrialStatus::Completed);
    assert_eq!(trials.len(), 3, "the freed slot is filled in the same round");
    assert!(asked >= 2, "asked again after the new proposal: {asked}");
}
