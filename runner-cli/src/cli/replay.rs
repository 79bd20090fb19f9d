//! `optx replay STORE [--with FILE]`: the early-stopping rule of the store's experiment (or
//! of FILE) over its stored learning curves: which trials it stops, where, and what it saves.

use std::collections::BTreeMap;
use std::path::Path;

use super::out::outln;
use super::{load, open_target, CliError, Done, Outcome};
use crate::domain::TrialStatus;
use crate::stopping::replay::replay;

pub(super) fn cmd_replay(target: &Path, with: Option<&Path>) -> Outcome {
    let (store, spec, path) = open_target(target)?;
    let (es, from) = match with {
        Some(file) => match load(file) {
            Ok((s, _)) => (s.early_stopping, file.display().to_string()),
            Err(c) => return Err(c),
        },
        None => (spec.early_stopping.clone(), format!("the experiment in {path}")),
    };
    let Some(es) = es else {
        return Err(CliError::usage(format!("{from} has no [early_stopping] to replay (give one with --with FILE)")));
    };
    let (trials, log) = match (store.trials(), store.observation_log()) {
        (Ok(t), Ok(l)) => (t, l),
        (Err(e), _) | (_, Err(e)) => return Err(CliError::runtime(e)),
    };
    let ended_at: BTreeMap<u64, String> = trials
        .iter()
        .filter_map(|t| Some((t.index, t.completed_at.clone().filter(|_| t.status.is_terminal())?)))
        .collect();
    let r = replay(&es, &log, &ended_at);
    outln!(
        "optx: replaying {} learning curve(s) of `{}` ({} points) under {:?}",
        r.curves,
        es.metric,
        r.points,
        es.rule
    );
    let mut same = true;
    for t in trials.iter().filter(|t| t.status == TrialStatus::EarlyStopped || r.stopped.contains_key(&t.index)) {
        let run = (t.status == TrialStatus::EarlyStopped).then(|| t.reason.clone().unwrap_or_default());
        match (r.stopped.get(&t.index), run) {
            (Some(d), Some(reason)) if reason == d.reason => {
                outln!("trial {}: stopped at progression {}: {} (as the run did)", t.index, d.progression, d.reason)
            }
            (Some(d), Some(_)) => {
                same = false;
                outln!(
                    "trial {}: stopped at progression {}: {} (the run stopped it otherwise)",
                    t.index,
                    d.progression,
                    d.reason
                )
            }
            (Some(d), None) => {
                same = spec.early_stopping.is_none() && same;
                outln!(
                    "trial {}: stopped at progression {}: {} (the run let it go on: {})",
                    t.index,
                    d.progression,
                    d.reason,
                    t.status
                )
            }
            (None, Some(reason)) => {
                same = false;
                outln!("trial {}: not stopped (the run stopped it: {reason})", t.index)
            }
            (None, None) => {}
        }
    }
    let share = if r.points > 0 { 100.0 * r.saved as f64 / r.points as f64 } else { 0.0 };
    outln!(
        "optx: it stops {} of {} trial(s) with curves; progressions saved: {} of {} ({share:.1}%)",
        r.stopped.len(),
        r.curves,
        r.saved,
        r.points
    );
    // What a user tuning a rule must know first: whether it stops the run's winners.
    let finals = match store.final_observations() {
        Ok(f) => crate::domain::final_values(&f),
        Err(e) => return Err(CliError::runtime(e)),
    };
    let best = crate::domain::best_trials(&spec.goal, &trials, &finals);
    let best: Vec<u64> = best.iter().map(|p| p.0).collect();
    let lost: Vec<u64> = best.iter().copied().filter(|i| r.stopped.contains_key(i)).collect();
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    match (best.len(), lost.len()) {
        (0, _) => {}
        (1, 0) => outln!("optx: it lets the best completed trial ({}) run to its end", best[0]),
        (_, 0) => outln!("optx: it lets the best completed trials ({}) run to their end", list(&best)),
        (1, _) => outln!(
            "optx: warning: it stops trial {}, the best completed trial of the run: loosen the rule (a higher min_progression, patience, protect_best)",
            best[0]
        ),
        (_, _) => outln!(
            "optx: warning: it stops trial(s) {} of the best completed trials ({}): loosen the rule (a higher min_progression, patience, protect_best)",
            list(&lost),
            list(&best)
        ),
    }
    if with.is_none() && spec.early_stopping.is_some() {
        outln!(
            "optx: {}",
            if same {
                "the run's own decisions are reproduced exactly"
            } else {
                "the run decided otherwise for some trials (above)"
            }
        );
    }
    Ok(Done::Ok)
}
