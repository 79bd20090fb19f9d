//! The store's tests, run against both implementations: the SQLite file and a PostgreSQL
//! server (`OPTX_TEST_PG_URL`, which `scripts/test.sh` starts; without it they fail).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use super::*;
use crate::domain::{Direction, Durability, Objective};

/// Where the stores of one test are: every `open` opens the same store again.
enum Place {
    File(tempfile::TempDir),
    Server { url: String, experiment: String },
}

impl Place {
    fn sqlite() -> Place {
        Place::File(tempfile::tempdir().unwrap())
    }

    fn postgres(test: &str) -> Place {
        static N: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("OPTX_TEST_PG_URL").expect(
            "OPTX_TEST_PG_URL is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server for them",
        );
        let short: String = test.chars().take(32).collect();
        let experiment = format!("t_{short}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        Place::Server { url, experiment }
    }

    fn location(&self) -> StoreLocation {
        match self {
            Place::File(d) => StoreLocation::File(d.path().join("x.db")),
            Place::Server { url, experiment } => {
                StoreLocation::Server { url: url.clone(), experiment: Some(experiment.clone()) }
            }
        }
    }

    fn open(&self) -> Box<dyn Ledger> {
        open(&self.location(), Durability::Normal).unwrap()
    }
}

fn new_trial(s: &mut dyn Ledger, i: u64, session: i64) {
    let p = serde_json::json!({"x": i});
    let key = format!("k{i}");
    s.tx(|t| {
        t.insert_trial(&NewTrial {
            index: i,
            arm_key: &key,
            parameters: &p,
            generation: "sobol",
            rerun_of: None,
            attempt: 1,
            session,
        })
    })
    .unwrap();
}

fn worker(pid: u32) -> NewWorker<'static> {
    NewWorker { command: "optx run", pid, process_start: Some(1), host: "h", lease_seconds: 60.0 }
}

fn transitions_are_checked_against_the_lifecycle_and_the_stored_status(place: Place) {
    let mut s = place.open();
    new_trial(s.as_mut(), 0, 1);
    let d = TransitionData::default();
    s.tx(|t| t.transition(0, TrialStatus::Candidate, TrialStatus::Staged, &d)).unwrap();
    assert!(s.tx(|t| t.transition(0, TrialStatus::Candidate, TrialStatus::Staged, &d)).is_err());
    assert!(matches!(
        s.tx(|t| t.transition(0, TrialStatus::Staged, TrialStatus::Completed, &d)),
        Err(StoreError::Transition { .. })
    ));
    s.tx(|t| t.transition(0, TrialStatus::Staged, TrialStatus::Running, &d)).unwrap();
    let rows = s.trials().unwrap();
    assert_eq!(rows[0].status, TrialStatus::Running);
    assert!(rows[0].staged_at.is_some() && rows[0].started_at.is_some());
    // A failed transaction leaves nothing behind.
    let p = serde_json::json!({});
    let r: Result<()> = s.tx(|t| {
        t.insert_trial(&NewTrial {
            index: 1,
            arm_key: "k",
            parameters: &p,
            generation: "g",
            rerun_of: None,
            attempt: 1,
            session: 1,
        })?;
        Err(StoreError::Other("boom".into()))
    });
    assert!(r.is_err());
    assert_eq!(s.trials().unwrap().len(), 1);
    // The next transaction works as usual.
    new_trial(s.as_mut(), 1, 1);
    assert_eq!(s.tx(|t| t.next_index()).unwrap(), 2);
}

fn a_live_worker_keeps_the_store_and_a_dead_one_is_taken_over_and_fenced(place: Place) {
    let mut a = place.open();
    let mut b = place.open();
    let wa = a.join(&worker(10), true, &|_| true).unwrap();
    assert!(matches!(b.join(&worker(11), true, &|_| true), Err(StoreError::Owned(w)) if w.pid == 10));
    let wb = b.join(&worker(11), false, &|_| true).unwrap();
    assert_ne!(wa, wb);
    let mut c = place.open();
    let wc = c.join(&worker(12), false, &|w| w.pid != 10).unwrap();
    assert!(matches!(a.renew(wa), Err(StoreError::LeaseLost)));
    assert!(matches!(a.tx(|_| Ok(())), Err(StoreError::LeaseLost)));
    b.renew(wb).unwrap();
    b.tx(|_| Ok(())).unwrap();
    let ws = c.workers().unwrap();
    assert_eq!(ws.iter().map(|w| (w.pid, w.open())).collect::<Vec<_>>(), [(10, false), (11, true), (12, true)]);
    assert!(ws[0].taken_over.is_some());
    assert!(ws[1].lease_runs(SystemTime::now()));
    c.leave(wc, Some(0)).unwrap();
    assert_eq!(c.workers().unwrap()[2].exit_code, Some(0));
}

fn of_workers_claiming_one_trial_one_wins(place: Place) {
    let mut a = place.open();
    let wa = a.join(&worker(10), false, &|_| true).unwrap();
    new_trial(a.as_mut(), 0, wa);
    let mut b = place.open();
    let wb = b.join(&worker(11), false, &|_| true).unwrap();
    assert!(a.tx(|t| t.claim(0, Some(wa), wa + 100)).unwrap());
    assert!(!b.tx(|t| t.claim(0, Some(wa), wb)).unwrap(), "the holder changed: the second claim loses");
    assert!(b.tx(|t| t.claim(0, Some(wa + 100), wb)).unwrap());
    assert!(!b.tx(|t| t.take_over(wa, &|_| true)).unwrap(), "alive when asked again");
    assert!(b.tx(|t| t.take_over(wa, &|_| false)).unwrap());
    assert!(!b.tx(|t| t.take_over(wa, &|_| false)).unwrap(), "taken over once");
    assert_eq!(b.tx(|t| t.open_workers()).unwrap(), vec![wb]);
}

fn the_change_feed_brings_what_other_workers_wrote(place: Place) {
    let mut a = place.open();
    let wa = a.join(&worker(10), false, &|_| true).unwrap();
    let mut b = place.open();
    let wb = b.join(&worker(11), false, &|_| true).unwrap();
    let cursor = b.last_event().unwrap();
    new_trial(a.as_mut(), 0, wa);
    new_trial(b.as_mut(), 1, wb);
    let d = TransitionData { feasible: Some(true), ..Default::default() };
    a.tx(|t| {
        t.transition(0, TrialStatus::Candidate, TrialStatus::Staged, &d)?;
        t.transition(0, TrialStatus::Staged, TrialStatus::Running, &d)?;
        t.observation(&Observation {
            trial: 0,
            metric: "f".into(),
            progression: None,
            mean: 1.5,
            sem: None,
            is_final: true,
        })?;
        t.transition(0, TrialStatus::Running, TrialStatus::Completed, &d)
    })
    .unwrap();
    let ch = b.tx(|t| t.changes(cursor, wb)).unwrap();
    assert_eq!(ch.trials.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0], "only the other worker's trial");
    assert_eq!(ch.trials[0].status, TrialStatus::Completed);
    assert_eq!(ch.finals.len(), 1);
    assert_eq!(ch.finals[0].mean, 1.5);
    // From the new cursor on, nothing more.
    let again = b.tx(|t| t.changes(ch.cursor, wb)).unwrap();
    assert!(again.trials.is_empty() && again.cursor == ch.cursor);
    // The generator's state is shared.
    a.tx(|t| t.set_generator_state("sequence", &serde_json::json!({"i": 3}))).unwrap();
    a.tx(|t| t.set_generator_state("sequence", &serde_json::json!({"i": 4}))).unwrap();
    assert_eq!(b.generator_state("sequence").unwrap(), Some(serde_json::json!({"i": 4})));
}

fn summaries_are_computed_by_the_store(place: Place) {
    let mut s = place.open();
    let d = TransitionData::default();
    for (i, (value, feasible)) in [(3.0, true), (1.0, false), (2.0, true)].into_iter().enumerate() {
        let i = i as u64;
        new_trial(s.as_mut(), i, 1);
        s.tx(|t| {
            t.transition(i, TrialStatus::Candidate, TrialStatus::Staged, &d)?;
            t.transition(i, TrialStatus::Staged, TrialStatus::Running, &d)?;
            let data = TransitionData { feasible: Some(feasible), ..Default::default() };
            t.transition(i, TrialStatus::Running, TrialStatus::Completed, &data)?;
            t.observation(&Observation {
                trial: i,
                metric: "f".into(),
                progression: None,
                mean: value,
                sem: None,
                is_final: true,
            })
        })
        .unwrap();
    }
    new_trial(s.as_mut(), 3, 1);
    let lost = TransitionData { lost: true, ..Default::default() };
    s.tx(|t| t.transition(3, TrialStatus::Candidate, TrialStatus::Failed, &lost)).unwrap();
    assert_eq!(s.trial_counts().unwrap(), (4, 3));
    assert_eq!(s.feasible_count().unwrap(), 2);
    let mut counts = s.status_counts().unwrap();
    counts.sort();
    assert_eq!(counts, vec![("COMPLETED".into(), false, 3), ("FAILED".into(), true, 1)]);
    let best = |d| s.best(&Goal::single(Objective::metric("f", d))).unwrap();
    assert_eq!(best(Direction::Minimize).into_iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(), vec![(2, vec![2.0])]);
    assert_eq!(best(Direction::Maximize).into_iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(), vec![(0, vec![3.0])]);
    assert_eq!(s.final_observations().unwrap().len(), 3);
    assert_eq!(s.curve_points(&[0, 9]).unwrap(), std::collections::HashMap::from([(0, 0), (9, 0)]));
}

/// A store copied to the other kind and back holds the same rows, and its identity.
fn a_copy_to_the_other_kind_and_back_is_the_same_store(place: Place, other: Place) {
    let mut s = place.open();
    let w = s.join(&worker(10), false, &|_| true).unwrap();
    s.save_experiment(
        "e",
        "[experiment]\nname = \"e\"\n",
        Path::new("/x/e.toml"),
        Path::new("/x"),
        7,
        &serde_json::json!({"max_trials": 3}),
        true,
    )
    .unwrap();
    for i in 0..5 {
        new_trial(s.as_mut(), i, w);
    }
    let d = TransitionData { lost: true, reason: Some("gone"), ..Default::default() };
    s.tx(|t| {
        t.transition(1, TrialStatus::Candidate, TrialStatus::Failed, &d)?;
        t.observation(&Observation {
            trial: 2,
            metric: "f".into(),
            progression: Some(0.5),
            mean: 0.1,
            sem: Some(0.01),
            is_final: false,
        })
    })
    .unwrap();
    s.leave(w, Some(0)).unwrap();
    let dest = other.location();
    copy(s.as_ref(), &dest).unwrap();
    let c = open_read(&dest).unwrap();
    let back = match &place {
        Place::File(d) => StoreLocation::File(d.path().join("back.db")),
        Place::Server { url, experiment } => {
            StoreLocation::Server { url: url.clone(), experiment: Some(format!("{experiment}_back")) }
        }
    };
    copy(c.as_ref(), &back).unwrap();
    let b = open_read(&back).unwrap();
    for x in [&c, &b] {
        assert_eq!(x.id().unwrap(), s.id().unwrap());
        assert_eq!(x.trials().unwrap(), s.trials().unwrap());
        assert_eq!(x.observations().unwrap(), s.observations().unwrap());
        assert_eq!(x.workers().unwrap(), s.workers().unwrap());
        assert_eq!(x.last_event().unwrap(), s.last_event().unwrap());
        let (e, f) = (x.experiment().unwrap().unwrap(), s.experiment().unwrap().unwrap());
        assert_eq!((e.name, e.spec_toml, e.seed, e.overrides), (f.name, f.spec_toml, f.seed, f.overrides));
    }
    // A copy never overwrites.
    assert!(matches!(copy(s.as_ref(), &dest), Err(StoreError::Unusable(_))));
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Place::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Place::postgres(stringify!($name))) })*
        }
    };
}

both!(
    transitions_are_checked_against_the_lifecycle_and_the_stored_status,
    a_live_worker_keeps_the_store_and_a_dead_one_is_taken_over_and_fenced,
    of_workers_claiming_one_trial_one_wins,
    the_change_feed_brings_what_other_workers_wrote,
    summaries_are_computed_by_the_store,
);

#[test]
fn a_file_store_copied_to_a_server_and_back_is_the_same() {
    a_copy_to_the_other_kind_and_back_is_the_same_store(Place::sqlite(), Place::postgres("copy_from_file"));
}

#[test]
fn a_server_store_copied_to_a_file_and_back_is_the_same() {
    a_copy_to_the_other_kind_and_back_is_the_same_store(Place::postgres("copy_from_server"), Place::sqlite());
}
