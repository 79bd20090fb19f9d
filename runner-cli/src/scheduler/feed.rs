//! The change feed, read by this dispatcher at each wake-up inside the transaction it opens
//! anyway: the trials that other workers (or `optx tell`, `attach`...) created or moved
//! since its last look reach its cache, its model and its budget before it decides
//! anything. Writers are serialized by the store's transaction, so once the feed is read,
//! trial indices, arm claims, the budget and the generator's draws decided in the same
//! transaction are the ledger's own: no arm is claimed twice, `max_trials` holds exactly.

use std::collections::BTreeMap;

use super::state::{Rerun, State};
use super::stop;
use crate::domain::{Arm, Observation, Trial, TrialStatus};
use crate::store::{self, Tx};

impl State<'_> {
    /// Read what changed since the last look and fold it into the state.
    pub(super) fn sync(&mut self, tx: &mut dyn Tx) -> Result<(), store::StoreError> {
        let changes = tx.changes(self.cursor, self.session)?;
        self.cursor = changes.cursor;
        if changes.trials.is_empty() {
            return Ok(());
        }
        let mut finals = changes.finals.into_iter().peekable();
        for t in changes.trials {
            let mine: Vec<Observation> = std::iter::from_fn(|| finals.next_if(|o| o.trial == t.index)).collect();
            // Our own trials are ours to know: the feed brings others' changes to them
            // only when this worker was taken over, and then it writes nothing more.
            if self.running.contains_key(&t.index) {
                continue;
            }
            self.absorb(t, &mine);
        }
        // Another worker's proposals moved the shared sequence on.
        if let Some(v) = tx.generator_state("sequence")? {
            if let Ok(s) = serde_json::from_value(v) {
                self.generator.state = s;
            }
        }
        Ok(())
    }

    /// A trial as another worker left it.
    fn absorb(&mut self, t: Trial, finals: &[Observation]) {
        let index = t.index as usize;
        if index < self.trials.len() {
            let known = &mut self.trials[index];
            if known.status.is_terminal() {
                return;
            }
            if known.status == t.status && known.lost == t.lost {
                // Only who follows it changed (a takeover).
                known.holder = t.holder;
                return;
            }
            // It was pending here (it ran elsewhere): now it has ended.
            if t.status.is_terminal() {
                self.ended_elsewhere(&t, finals);
            }
            self.trials[index] = t;
        } else {
            // New here. Trials are created in index order, and the feed is read in it.
            while self.trials.len() < index {
                // A gap would be a trial that no event announced: read it as a placeholder
                // that ended, so that indices stay those of the ledger.
                let mut gap = t.clone();
                gap.index = self.trials.len() as u64;
                gap.status = TrialStatus::Failed;
                gap.lost = true;
                gap.shrink();
                self.trials.push(gap);
            }
            if let Some(of) = t.rerun_of {
                // Another worker ran that arm again: not ours to re-run any more.
                self.reruns.retain(|r| r.of != of);
            }
            // Counted as a deployment that is not lost and takes its arm, as when it was
            // created; if it has ended already, its end undoes what it must.
            self.nonlost += 1;
            self.take_arm(&t.arm_key);
            if t.status.is_terminal() {
                self.ended_elsewhere(&t, finals);
            } else if let (true, Some(arm)) = (self.generator.learns(), Arm::from_json(&self.spec.space, &t.parameters))
            {
                self.generator.pending(t.index, &arm);
            }
            self.trials.push(t);
        }
        if let Some(t) = self.trials.get_mut(index).filter(|t| t.status.is_terminal()) {
            t.shrink();
        }
    }

    /// What another worker's trial that ended changes here: the model, the best point, the
    /// cost spent, the arms taken, and the arms to run again.
    fn ended_elsewhere(&mut self, t: &Trial, finals: &[Observation]) {
        let spec = self.spec;
        let arm = Arm::from_json(&spec.space, &t.parameters);
        let values: BTreeMap<String, (f64, Option<f64>)> =
            finals.iter().map(|o| (o.metric.clone(), (o.mean, o.sem))).collect();
        match t.status {
            TrialStatus::Completed => {
                if let (true, Some(arm)) = (self.generator.learns(), &arm) {
                    self.generator.observe(t.index, arm, values.clone());
                }
                let objective: Option<Vec<f64>> =
                    spec.goal.objectives.iter().map(|o| o.value(|m| values.get(m).map(|v| v.0))).collect();
                if let (Some(v), Some(true)) = (objective, t.feasible) {
                    spec.goal.admit(&mut self.best, t.index, v);
                }
                self.cost += values.get("cost").map_or(0.0, |v| v.0);
                if let Some(s) = stop::cost(&spec.orchestration, self.cost) {
                    self.stop(s);
                }
            }
            TrialStatus::Failed => {
                self.release_arm(&t.arm_key);
                if t.lost {
                    self.nonlost = self.nonlost.saturating_sub(1);
                }
                if self.generator.learns() {
                    self.generator.forget(t.index);
                }
                let retry = !t.lost && t.attempt <= spec.orchestration.retries_per_failed_arm;
                if let Some(arm) = arm.filter(|_| t.lost || retry) {
                    let (attempt, label) = if t.lost { (t.attempt, "rerun") } else { (t.attempt + 1, "retry") };
                    self.reruns.push_back(Rerun { arm, of: t.index, attempt, label });
                }
            }
            _ => {
                if self.generator.learns() {
                    self.generator.forget(t.index);
                }
            }
        }
    }
}
