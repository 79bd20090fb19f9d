//! `optx clean`: settle the trials that nobody follows any more (their worker is dead, or
//! their process vanished) without running the experiment on: a trial whose process ended
//! gets its outcome read from what it left (its exit status, its result file), one whose
//! process is gone without a trace is lost (its arm runs again), one that never started is
//! left as a candidate for the next run to start, and one that still runs is left to the
//! next `resume` or joining worker to follow. With `dry_run`, it only says what it would do.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::unbounded;

use super::launch::runner_for;
use super::state::State;
use super::{worker_alive, RunError};
use crate::domain::{Arm, ExperimentSpec, RunnerSpec, TrialStatus};
use crate::exec;
use crate::runners::{RunnerEvent, TrialJob, Unstarted};
use crate::store::{Ledger, LedgerExt, StoreError};

fn store_err(e: StoreError) -> RunError {
    match e {
        StoreError::Unusable(m) => RunError::Usage(m),
        e => RunError::Runtime(e.to_string()),
    }
}

/// What `clean` did (or, with `dry_run`, would do), a line each.
pub fn clean(
    spec: &ExperimentSpec,
    store: &mut dyn Ledger,
    session: i64,
    seed: u64,
    exe: &Path,
    dry_run: bool,
) -> Result<Vec<String>, RunError> {
    let mut said = Vec::new();
    let would = |done: &str, planned: &str| if dry_run { planned.to_string() } else { done.to_string() };
    let workers = store.workers().map_err(store_err)?;
    for w in workers.iter().filter(|w| w.id != session && w.open() && !worker_alive(w)) {
        said.push(format!(
            "worker #{} (pid {} on {}) is dead: {}",
            w.id,
            w.pid,
            w.host,
            would("marked taken over", "it would be marked taken over")
        ));
    }
    // Live workers hold their trials (the dead ones were marked when this actor joined, or
    // would be, in a dry run).
    let open: Vec<i64> =
        workers.iter().filter(|w| w.id != session && w.open() && worker_alive(w)).map(|w| w.id).collect();
    let trials = store.trials().map_err(store_err)?;
    let orphans: Vec<_> = trials
        .iter()
        .filter(|t| !t.status.is_terminal() && !t.is_asked() && !t.holder.is_some_and(|h| open.contains(&h)))
        .collect();
    if orphans.is_empty() {
        said.push("no trial is left without a worker".into());
        return Ok(said);
    }
    if !matches!(spec.runner, RunnerSpec::Command(_)) {
        for t in &orphans {
            said.push(format!("trial {}: nobody follows it; `optx resume` asks its runner about it", t.index));
        }
        return Ok(said);
    }
    let store_id = store.id().map_err(store_err)?;
    // A dry run starts nothing (the runner starts a shepherd) and writes nothing.
    let runner = if dry_run { None } else { Some(runner_for(spec, exe)?) };
    let mut results = Vec::new();
    for t in orphans {
        let index = t.index;
        let Some(arm) = Arm::from_json(&spec.space, &t.parameters) else { continue };
        let job = TrialJob {
            index,
            arm,
            slot: 0,
            trial_dir: spec.trials_root().join(index.to_string()),
            attach: t.run_metadata.clone().or(Some(serde_json::Value::Null)),
            started_at: t.started_at.as_deref().and_then(crate::store::parse_time),
            token: exec::token(&store_id, index),
            stored_points: 0,
        };
        let run = exec::read_process(&job.trial_dir, &job.token).run;
        if t.status != TrialStatus::Running && run.is_none() {
            if dry_run {
                said.push(format!(
                    "trial {index} ({}) never started: it would be left for the next run to start",
                    t.status
                ));
                continue;
            }
            let Some(runner) = &runner else { continue };
            match runner.unstarted(&TrialJob { attach: None, ..job.clone() }, t.status == TrialStatus::Staged) {
                Unstarted::Never => {
                    said.push(format!("trial {index} never started: left as a candidate for the next run to start"));
                    continue;
                }
                Unstarted::Started(_) => {}
                Unstarted::Unknown(why) => {
                    said.push(format!("trial {index}: {why}; a resume records it as lost"));
                    continue;
                }
            }
        }
        let run = exec::read_process(&job.trial_dir, &job.token).run;
        if let Some(r) = run.filter(|r| exec::alive(r.pid, r.start)) {
            said.push(format!(
                "trial {index} still runs (pid {}) and nobody follows it: `optx resume`, or a worker that joins, re-attaches it",
                r.pid
            ));
            continue;
        }
        if dry_run {
            let how = if exec::read_exit(&job.trial_dir, &job.token).is_some() {
                "its process ended: its outcome would be read from what it left"
            } else {
                "its process is gone and recorded no exit status: it would be lost (or completed from a result file)"
            };
            said.push(format!("trial {index}: {how}"));
            continue;
        }
        // Its process has ended: the runner reads what it left, as when it follows a trial.
        let Some(runner) = &runner else { continue };
        let meta = match run {
            Some(r) => serde_json::json!({"pid": r.pid, "start": r.start, "trial_dir": job.trial_dir}),
            None => serde_json::json!({"trial_dir": job.trial_dir}),
        };
        let seen = t.holder;
        let (ctl_tx, ctl_rx) = unbounded();
        let (ev_tx, ev_rx) = unbounded();
        runner.execute(job, &ctl_rx, &ev_tx);
        drop(ctl_tx);
        for ev in ev_rx.try_iter() {
            if let RunnerEvent::Finished { index, result } = ev {
                results.push((index, result, meta.clone(), seen));
            }
        }
    }
    if let Some(r) = &runner {
        r.close();
    }
    if !results.is_empty() {
        let mut st = State::load(spec, store, seed, session, Arc::default()).map_err(store_err)?;
        let settled = store
            .tx(|tx| {
                st.sync(tx)?;
                let mut lines = Vec::new();
                for (index, result, meta, seen) in results {
                    if st.trials.get(index as usize).is_none_or(|t| t.status.is_terminal()) {
                        continue;
                    }
                    // Unless a worker took it meanwhile (compare and set on its holder).
                    if !tx.claim(index, seen, session)? {
                        continue;
                    }
                    if st.trials[index as usize].status != TrialStatus::Running {
                        // It started, but that was never recorded.
                        st.mark_running(tx, index, meta, None)?;
                    }
                    st.finish(tx, index, result)?;
                    let t = &st.trials[index as usize];
                    let how = if t.lost { "lost (its arm runs again)".to_string() } else { t.status.to_string() };
                    lines.push(format!("trial {index}: {how}"));
                }
                Ok(lines)
            })
            .map_err(store_err)?;
        said.extend(settled);
    }
    Ok(said)
}
