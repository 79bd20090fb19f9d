//! Resuming: what became of the trials that had not ended when optx last stopped, and
//! which arms run again.

use std::collections::{BTreeSet, VecDeque};

use super::state::{Rerun, State};
use super::RunEvent;
use crate::domain::{Arm, ExperimentSpec, Trial, TrialStatus};
use crate::runners::{TrialJob, TrialRunner, Unstarted};
use crate::store::{self, TransitionData, Tx};

impl State<'_> {
    /// Reconcile trials that were not finished when optx last stopped (or that workers
    /// which ended or died left), then deploy.
    pub(super) fn reconcile(&mut self, tx: &mut dyn Tx, runner: &dyn TrialRunner) -> Result<(), store::StoreError> {
        self.take_orphans(tx, runner, &[])?;
        self.fill(tx, &mut Vec::new)
    }

    /// Take over what nobody follows: each worker of `dead` is marked taken over (if it is
    /// still dead when asked again here), then every trial that has not ended, that nobody
    /// ran from the shell, and whose holder is not an open worker, is claimed by compare and
    /// set (of workers doing this at once, one wins each trial) and settled here.
    pub(super) fn take_orphans(
        &mut self,
        tx: &mut dyn Tx,
        runner: &dyn TrialRunner,
        dead: &[i64],
    ) -> Result<(), store::StoreError> {
        self.sync(tx)?;
        for w in dead {
            if tx.take_over(*w, &super::worker_alive)? {
                self.print(RunEvent::Notice(format!(
                    "worker #{w} is dead (its lease ran out, or its process is gone): taking over its trials"
                )));
            }
        }
        let others: std::collections::HashSet<i64> =
            tx.open_workers()?.into_iter().filter(|w| *w != self.session).collect();
        let mut won = Vec::new();
        for t in tx.open_trials()? {
            let held = t.holder.is_some_and(|h| h == self.session || others.contains(&h));
            if held || t.is_asked() || self.running.contains_key(&t.index) || t.index as usize >= self.trials.len() {
                continue;
            }
            if tx.claim(t.index, t.holder, self.session)? {
                let mut mine = t.clone();
                mine.holder = Some(self.session);
                self.trials[t.index as usize] = mine.clone();
                won.push(mine);
            }
        }
        if !won.is_empty() && !dead.is_empty() {
            let list: Vec<String> = won.iter().map(|t| t.index.to_string()).collect();
            self.print(RunEvent::Notice(format!(
                "taking over {} trial(s) that nobody follows: {}",
                won.len(),
                list.join(", ")
            )));
        }
        self.settle(tx, runner, won)
    }

    /// Settle trials that nobody alive follows: follow those that run, deploy those that
    /// never started, and lose those that cannot be told.
    fn settle(&mut self, tx: &mut dyn Tx, runner: &dyn TrialRunner, open: Vec<Trial>) -> Result<(), store::StoreError> {
        for t in open {
            let Some(arm) = Arm::from_json(&self.spec.space, &t.parameters) else { continue };
            let idx = t.index;
            if t.status == TrialStatus::Running {
                let pid = t.run_metadata.as_ref().and_then(|m| m.get("pid")).and_then(|p| p.as_u64());
                self.print(RunEvent::Reattached { index: idx, pid });
                self.dispatch(idx, arm, t.run_metadata.clone().or(Some(serde_json::Value::Null)), t.slot);
                continue;
            }
            // Recorded, not known to run: ask the runner what became of it.
            let job = TrialJob {
                index: idx,
                arm: arm.clone(),
                slot: 0,
                trial_dir: self.trial_dir(idx),
                attach: None,
                started_at: None,
                token: crate::exec::token(&self.store_id, idx),
                stored_points: 0,
            };
            match runner.unstarted(&job, t.status == TrialStatus::Staged) {
                Unstarted::Started(meta) => {
                    // It started, but optx stopped before recording that: record it now.
                    let pid = meta.get("pid").and_then(|p| p.as_u64());
                    self.mark_running(tx, idx, meta.clone(), None)?;
                    self.print(RunEvent::Reattached { index: idx, pid });
                    self.dispatch(idx, arm, Some(meta), t.slot);
                }
                Unstarted::Unknown(why) => {
                    // It may have started: it is lost and runs again.
                    let data = TransitionData { reason: Some(&why), lost: true, ..Default::default() };
                    tx.transition(idx, t.status, TrialStatus::Failed, &data)?;
                    let row = &mut self.trials[idx as usize];
                    row.status = TrialStatus::Failed;
                    row.lost = true;
                    self.nonlost -= 1;
                    self.release_arm(&t.arm_key);
                    self.reruns.push_back(Rerun { arm, of: idx, attempt: t.attempt, label: "rerun" });
                }
                Unstarted::Never => {
                    // It never ran and never will: deploy it now, as it is.
                    self.print(RunEvent::Deployed {
                        index: idx,
                        params: t.parameters.clone(),
                        generation: t.generation.clone(),
                    });
                    self.deployed_now += 1;
                    self.undeployed.insert(idx);
                    self.dispatch(idx, arm, None, None);
                }
            }
        }
        Ok(())
    }
}

/// Rebuild the arms to re-run from the store: lost trials whose arm has not run again,
/// failed ones with retries left.
pub(super) fn pending_reruns(spec: &ExperimentSpec, trials: &[Trial]) -> VecDeque<Rerun> {
    let rerun: BTreeSet<u64> = trials.iter().filter_map(|t| t.rerun_of).collect();
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Failed && !rerun.contains(&t.index))
        .filter_map(|t| {
            let arm = Arm::from_json(&spec.space, &t.parameters)?;
            if t.lost {
                Some(Rerun { arm, of: t.index, attempt: t.attempt, label: "rerun" })
            } else if t.attempt <= spec.orchestration.retries_per_failed_arm {
                Some(Rerun { arm, of: t.index, attempt: t.attempt + 1, label: "retry" })
            } else {
                None
            }
        })
        .collect()
}
