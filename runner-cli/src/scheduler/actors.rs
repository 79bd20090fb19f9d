//! Ask, tell and attach: the experiment driven from the shell, as Ax's ask/tell and
//! `attach_trial`. Each is an ordinary actor on the ledger, safe beside running workers:
//! it joins the store as a short-lived worker, does its work in one transaction (after
//! reading the change feed, as a dispatcher does), and leaves. Trials it hands out or adds
//! run outside optx: they are RUNNING and held by nobody, so no lease runs out on them and
//! no worker settles them; running workers learn from what is told at their next look.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::state::State;
use super::RunError;
use crate::domain::{Arm, ExperimentSpec, Observation, OutcomeConstraint, TrialStatus, Value};
use crate::store::{Ledger, LedgerExt, StoreError, TransitionData, Tx};

/// A trial handed out by `ask` or added by `attach`.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub index: u64,
    pub parameters: serde_json::Value,
    pub generation: String,
}

/// What `tell` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Told {
    Completed {
        feasible: bool,
    },
    /// A point of its learning curve was stored, and the trial goes on.
    Point,
    /// A point was stored, and the early-stopping rule stops the trial (now, or earlier:
    /// it is EARLY_STOPPED), for this reason.
    Stop(String),
    Failed,
    Abandoned,
}

/// One reported value: `m=v[:sem]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub metric: String,
    pub mean: f64,
    pub sem: Option<f64>,
}

fn store_err(e: StoreError) -> RunError {
    match e {
        StoreError::Unusable(m) => RunError::Usage(m),
        e => RunError::Runtime(e.to_string()),
    }
}

/// Record a trial that the user runs: from CANDIDATE to RUNNING, held by nobody.
fn hand_out(tx: &mut dyn Tx, index: u64, session: i64) -> Result<(), StoreError> {
    let meta = serde_json::json!({ "asked_by": session });
    let data = TransitionData { run_metadata: Some(&meta), ..Default::default() };
    tx.transition(index, TrialStatus::Candidate, TrialStatus::Staged, &data)?;
    tx.transition(index, TrialStatus::Staged, TrialStatus::Running, &data)?;
    tx.hold(index, None)
}

/// `count` new trials from the experiment's generator (fewer if the budget or the search
/// space ends first).
pub fn ask(
    spec: &ExperimentSpec,
    store: &mut dyn Ledger,
    session: i64,
    seed: u64,
    count: u64,
) -> Result<Vec<Asked>, RunError> {
    let mut st = State::load(spec, store, seed, session, Arc::default()).map_err(store_err)?;
    store
        .tx(|tx| {
            st.sync(tx)?;
            let mut out = Vec::new();
            while (out.len() as u64) < count && st.nonlost < spec.orchestration.max_trials && st.halt.is_none() {
                let Some(new) = st.create(tx)? else { break };
                hand_out(tx, new.index, session)?;
                out.push(Asked { index: new.index, parameters: new.params, generation: new.generation });
            }
            Ok(out)
        })
        .map_err(store_err)
}

/// Values as the command line gives them (`lr=0.01`, `opt=adam`, `deep=true`), each
/// coerced onto its parameter; fixed parameters take their value.
pub fn arm_of(spec: &ExperimentSpec, given: &[(String, String)]) -> Result<Arm, RunError> {
    let mut values = Vec::new();
    for p in &spec.space.parameters {
        let raw = given.iter().find(|(k, _)| *k == p.name).map(|(_, v)| v.as_str());
        let value = match (raw, &p.domain) {
            (None, crate::domain::Domain::Fixed { value }) => value.clone(),
            (None, _) => {
                return Err(RunError::Usage(format!("the parameter `{}` has no value (give {}=...)", p.name, p.name)))
            }
            (Some(v), _) => {
                let parsed = if let Ok(i) = v.parse::<i64>() {
                    Value::Int(i)
                } else if let Ok(f) = v.parse::<f64>() {
                    Value::Float(f)
                } else if let Ok(b) = v.parse::<bool>() {
                    Value::Bool(b)
                } else {
                    Value::Str(v.to_string())
                };
                // A choice of strings takes the text as it is, digits included.
                let parsed = match (&p.domain, &parsed) {
                    (
                        crate::domain::Domain::Choice { values, .. },
                        Value::Int(_) | Value::Float(_) | Value::Bool(_),
                    ) if values.iter().all(|c| matches!(c, Value::Str(_))) => Value::Str(v.to_string()),
                    _ => parsed,
                };
                p.coerce(&parsed).map_err(|e| RunError::Usage(format!("`{}={v}`: {e}", p.name)))?
            }
        };
        values.push((p.name.clone(), value));
    }
    if let Some((k, _)) = given.iter().find(|(k, _)| spec.space.parameter(k).is_none()) {
        return Err(RunError::Usage(format!("`{k}` is not a parameter of the experiment `{}`", spec.name)));
    }
    let arm = Arm { values };
    if !spec.space.satisfies_constraints(&arm) {
        return Err(RunError::Usage("these values violate a parameter constraint of the experiment".into()));
    }
    Ok(arm)
}

/// Add a trial that ran outside optx (it counts toward `max_trials`), and with `results`
/// complete it at once.
pub fn attach(
    spec: &ExperimentSpec,
    store: &mut dyn Ledger,
    session: i64,
    arm: &Arm,
    results: Option<&[Reported]>,
) -> Result<(Asked, Option<Told>), RunError> {
    if let Some(r) = results {
        completion(spec, r)?;
    }
    let params = arm.to_json();
    // The arm as the store holds it, so that its key is the one workers compare.
    let arm = Arm::from_json(&spec.space, &params).unwrap_or_else(|| arm.clone());
    store
        .tx(|tx| {
            let index = tx.next_index()?;
            tx.insert_trial(&crate::store::NewTrial {
                index,
                arm_key: &arm.key(),
                parameters: &params,
                generation: "attached",
                rerun_of: None,
                attempt: 1,
                session,
            })?;
            hand_out(tx, index, session)?;
            let told = match results {
                Some(r) => Some(complete(spec, tx, index, r)?),
                None => None,
            };
            Ok((Asked { index, parameters: params.clone(), generation: "attached".into() }, told))
        })
        .map_err(store_err)
}

/// Check that `results` complete a trial: every objective and constrained metric, finite.
fn completion(spec: &ExperimentSpec, results: &[Reported]) -> Result<(), RunError> {
    for m in spec.required_metrics() {
        match results.iter().find(|r| r.metric == m) {
            None => {
                return Err(RunError::Usage(format!(
                    "the metric `{m}` is missing: a completed trial reports {}",
                    spec.required_metrics().join(", ")
                )))
            }
            Some(r) if !r.mean.is_finite() => {
                return Err(RunError::Usage(format!("`{m}` is not finite ({}): tell `--failed` instead", r.mean)))
            }
            Some(_) => {}
        }
    }
    if let Some(r) = results.iter().find(|r| !spec.metrics.contains_key(&r.metric)) {
        return Err(RunError::Usage(format!(
            "`{}` is not a metric of the experiment (add `[metrics.{}]` to track it)",
            r.metric, r.metric
        )));
    }
    Ok(())
}

fn complete(spec: &ExperimentSpec, tx: &mut dyn Tx, index: u64, results: &[Reported]) -> Result<Told, StoreError> {
    for r in results {
        let o = Observation {
            trial: index,
            metric: r.metric.clone(),
            progression: None,
            mean: r.mean,
            sem: r.sem,
            is_final: true,
        };
        tx.observation(&o)?;
    }
    let values: BTreeMap<String, f64> = results.iter().map(|r| (r.metric.clone(), r.mean)).collect();
    let feasible = OutcomeConstraint::all_satisfied(&spec.outcome_constraints, &values);
    let data = TransitionData { feasible: Some(feasible), reason: Some("told"), ..Default::default() };
    tx.transition(index, TrialStatus::Running, TrialStatus::Completed, &data)?;
    Ok(Told::Completed { feasible })
}

/// The early-stopping rule on a point told of trial `index` (one the user runs): asked
/// about it alone, with every stored curve and this point; a stop ends it EARLY_STOPPED,
/// its last value as its final one.
fn early_stop(
    spec: &ExperimentSpec,
    tx: &mut dyn crate::store::Tx,
    index: u64,
    progression: f64,
    values: &[Reported],
    stored: &crate::stopping::Curves,
) -> Result<Told, crate::store::StoreError> {
    let Some(es) = &spec.early_stopping else { return Ok(Told::Point) };
    let Some(mine) = values.iter().find(|r| r.metric == es.metric) else { return Ok(Told::Point) };
    let mut curves = stored.clone();
    curves.push(index, progression, mine.mean);
    let Some(d) = crate::stopping::Checker::of(es).decide(&curves, &[index]).pop() else { return Ok(Told::Point) };
    let last = Observation {
        trial: index,
        metric: es.metric.clone(),
        progression: Some(progression),
        mean: mine.mean,
        sem: mine.sem,
        is_final: true,
    };
    tx.observation(&last)?;
    let decision = super::state::Stopped {
        reason: d.reason.clone(),
        progression: d.progression,
        decided_at: tx.time().to_string(),
        trigger: (index, progression),
        held: Vec::new(),
    };
    let meta = decision.metadata(None);
    let data = TransitionData { reason: Some(&d.reason), stop_metadata: Some(&meta), ..Default::default() };
    tx.transition(index, TrialStatus::Running, TrialStatus::EarlyStopped, &data)?;
    Ok(Told::Stop(d.reason))
}

/// How `tell` ends a trial, or adds to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Tell {
    Results(Vec<Reported>),
    Point { progression: f64, values: Vec<Reported> },
    Failed(String),
    Abandon(String),
}

/// Tell the outcome of a trial that the user runs (one from `ask` or `attach`).
pub fn tell(spec: &ExperimentSpec, store: &mut dyn Ledger, index: u64, what: &Tell) -> Result<Told, RunError> {
    if let Tell::Results(r) = what {
        completion(spec, r)?;
    }
    // The curves the rule compares, as stored before this point.
    let curves = match (&spec.early_stopping, what) {
        (Some(es), Tell::Point { .. }) => {
            let stopped_at = crate::stopping::stopped_at(&store.trials().map_err(store_err)?);
            crate::stopping::stored_curves(&es.metric, &store.observations().map_err(store_err)?, &stopped_at)
        }
        _ => Default::default(),
    };
    let mut refusal = None;
    let told = store
        .tx(|tx| {
            let Some(t) = tx.trial(index)? else {
                refusal = Some(format!("there is no trial {index}"));
                return Ok(None);
            };
            // Only trials that the user runs are told (an ended one has no run metadata left
            // in the cache, but the store keeps it).
            if !t.is_asked() {
                let who = t.holder.map_or("optx".to_string(), |h| format!("worker #{h}"));
                refusal = Some(format!(
                    "trial {index} is run by {who}, which records its outcome: tell only trials from `optx ask` or `optx attach`"
                ));
                return Ok(None);
            }
            if t.status.is_terminal() && !matches!(what, Tell::Point { .. }) {
                refusal = Some(format!("trial {index} has ended already ({})", t.status));
                return Ok(None);
            }
            Ok(Some(match what {
                Tell::Results(r) => complete(spec, tx, index, r)?,
                Tell::Point { progression, values } => {
                    for r in values {
                        let o = Observation {
                            trial: index,
                            metric: r.metric.clone(),
                            progression: Some(*progression),
                            mean: r.mean,
                            sem: r.sem,
                            is_final: false,
                        };
                        tx.observation(&o)?;
                    }
                    tx.event(Some(index), "progress", Some(&format!("progression {progression}")))?;
                    if t.status == TrialStatus::EarlyStopped {
                        Told::Stop(t.reason.clone().unwrap_or_else(|| "it was stopped earlier".into()))
                    } else if t.status.is_terminal() {
                        Told::Point
                    } else {
                        early_stop(spec, tx, index, *progression, values, &curves)?
                    }
                }
                Tell::Failed(why) => {
                    let data = TransitionData { reason: Some(why), ..Default::default() };
                    tx.transition(index, TrialStatus::Running, TrialStatus::Failed, &data)?;
                    Told::Failed
                }
                Tell::Abandon(why) => {
                    let data = TransitionData { reason: Some(why), ..Default::default() };
                    tx.transition(index, TrialStatus::Running, TrialStatus::Abandoned, &data)?;
                    Told::Abandoned
                }
            }))
        })
        .map_err(store_err)?;
    match (told, refusal) {
        (Some(t), _) => Ok(t),
        (None, Some(why)) => Err(RunError::Usage(why)),
        (None, None) => Err(RunError::Runtime("nothing was told".into())),
    }
}
