//! The ABI driven through a plugin defined here, as a host would drive it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::abi::OptxPluginV1;
use crate::host::{CallError, LoadError, Plugin};
use crate::{Error, Metric, Observation, OpenRequest, Poll, Runner, Status, TrialContext, TrialPoll, TrialRef};

struct Counter {
    started: AtomicU64,
    limit: u64,
}

impl Runner for Counter {
    fn open(req: &OpenRequest) -> Result<Self, Error> {
        let limit = req.config.get("limit").and_then(Value::as_u64).ok_or("`limit` is required")?;
        Ok(Counter { started: AtomicU64::new(0), limit })
    }
    fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error> {
        if ctx.number("x") == Some(13.0) {
            panic!("unlucky x");
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        Ok(json!({ "job": n, "x": ctx.number("x") }))
    }
    fn poll_trial(&self, trial_index: u64, metadata: &Value) -> Result<Poll, Error> {
        match metadata.get("job").and_then(Value::as_u64) {
            Some(j) if j % 2 == 0 => Ok(Poll::completed()),
            Some(_) => Ok(Poll::failed(format!("job of trial {trial_index} is odd"))),
            None => Err(Error::transient("no job yet")),
        }
    }
    fn poll_trials(&self, trials: &[TrialRef]) -> Result<Vec<TrialPoll>, Error> {
        trials
            .iter()
            .map(|t| Ok(TrialPoll { trial_index: t.trial_index, poll: self.poll_trial(t.trial_index, &t.metadata)? }))
            .collect()
    }
    fn available_capacity(&self) -> Result<Option<usize>, Error> {
        Ok(Some(self.limit.saturating_sub(self.started.load(Ordering::SeqCst)) as usize))
    }
}

struct X;

impl Metric for X {
    fn open(_req: &OpenRequest) -> Result<Self, Error> {
        Ok(X)
    }
    fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
        let x = metadata["x"].as_f64().ok_or_else(|| Error::transient("not yet"))?;
        Ok(vec![Observation::new(x).at(1.0).with_sem(0.5), Observation::new(2.0 * x)])
    }
}

crate::export_plugin! {
    name: "test-plugin",
    version: "1.2.3",
    runners: ["counter" => Counter],
    metrics: ["x" => X, "x2" => X],
}

fn plugin() -> Plugin {
    // SAFETY: the entry point of this module's plugin, built with the macro.
    unsafe { Plugin::from_entry(optx_plugin_v1) }.unwrap()
}

fn ctx(x: f64) -> TrialContext {
    TrialContext {
        trial_index: 7,
        parameters: json!({ "x": x }).as_object().unwrap().clone(),
        trial_dir: "/nonexistent".into(),
        experiment: "e".into(),
        slot: 0,
        config: json!({}),
    }
}

#[test]
fn the_table_names_the_plugin_and_what_it_offers() {
    let p = plugin();
    assert_eq!((p.name.as_str(), p.version.as_str()), ("test-plugin", "1.2.3"));
    assert_eq!(p.abi, (crate::ABI_MAJOR, crate::ABI_MINOR));
    assert_eq!(p.runners, vec!["counter"]);
    assert_eq!(p.metrics, vec!["x", "x2"]);
}

#[test]
fn a_runner_round_trips_through_the_abi() {
    let r = plugin().open_runner("counter", &json!({"limit": 2}), "e").unwrap();
    assert_eq!(r.available_capacity().unwrap(), Some(2));
    let m0 = r.run_trial(&ctx(1.5)).unwrap();
    let m1 = r.run_trial(&ctx(2.5)).unwrap();
    assert_eq!(m0, json!({"job": 0, "x": 1.5}));
    assert_eq!(r.available_capacity().unwrap(), Some(0));
    assert_eq!(r.poll_trial(7, &m0).unwrap().status, Status::Completed);
    assert_eq!(r.poll_trial(7, &m1).unwrap(), Poll::failed("job of trial 7 is odd"));
    let err = r.poll_trial(7, &json!({})).unwrap_err();
    assert!(err.retry(), "{err:?}");
    let batch =
        r.poll_trials(&[TrialRef { trial_index: 1, metadata: m0 }, TrialRef { trial_index: 2, metadata: m1 }]).unwrap();
    assert_eq!(
        batch.iter().map(|t| (t.trial_index, t.poll.status)).collect::<Vec<_>>(),
        [(1, Status::Completed), (2, Status::Failed)]
    );
    // Not implemented by this runner: the host is told so, and can fall back.
    assert_eq!(r.stop_trial(1, &json!({}), "why").unwrap_err(), CallError::Unsupported);
    assert_eq!(r.run_trials(&[ctx(1.0)]).unwrap_err(), CallError::Unsupported);
}

#[test]
fn a_panic_becomes_an_error_of_that_call_and_the_instance_goes_on() {
    let r = plugin().open_runner("counter", &json!({"limit": 5}), "e").unwrap();
    match r.run_trial(&ctx(13.0)) {
        Err(CallError::Failed(e)) => assert!(e.message.contains("panicked: unlucky x"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(r.run_trial(&ctx(1.0)).is_ok());
}

#[test]
fn open_reports_bad_configs_and_unknown_names() {
    let p = plugin();
    match p.open_runner("counter", &json!({}), "e") {
        Err(CallError::Failed(e)) => assert_eq!(e.message, "`limit` is required"),
        other => panic!("{:?}", other.err()),
    }
    let e = p.open_runner("countr", &json!({}), "e").err().unwrap();
    assert!(e.to_string().contains("offers no runner `countr`; its runners: counter"), "{e}");
    assert!(p.open_metric("counter", &json!({}), "e").is_err(), "a runner's name is not a metric");
}

#[test]
fn metrics_fetch_curves_with_sems_and_say_when_to_retry() {
    let m = plugin().open_metric("x", &json!(null), "e").unwrap();
    let obs = m.fetch(3, &json!({"x": 2.0})).unwrap();
    assert_eq!(obs, vec![Observation { progression: Some(1.0), mean: 2.0, sem: Some(0.5) }, Observation::new(4.0)]);
    assert!(m.fetch(3, &json!({})).unwrap_err().retry());
}

fn table_with(edit: impl FnOnce(&mut OptxPluginV1)) -> Result<Plugin, LoadError> {
    let good = optx_plugin_v1();
    // SAFETY: the table of this module's plugin, copied field by field.
    let t = unsafe { &*good };
    let mut copy = OptxPluginV1 { ..*t };
    edit(&mut copy);
    let leaked: &'static OptxPluginV1 = Box::leak(Box::new(copy));
    // SAFETY: a leaked (so everlasting) copy of a valid table, possibly spoiled on purpose.
    unsafe { Plugin::from_table(leaked) }
}

#[test]
fn the_host_refuses_other_versions_small_tables_and_missing_functions() {
    assert!(table_with(|_| {}).is_ok());
    let e = table_with(|t| t.abi_major = 2).unwrap_err();
    assert_eq!(e, LoadError::Version { major: 2, minor: 0 });
    assert!(e.to_string().contains("built for plugin ABI 2.0"), "{e}");
    assert_eq!(table_with(|t| t.abi_minor = 1).unwrap_err(), LoadError::Version { major: 1, minor: 1 });
    assert!(matches!(table_with(|t| t.struct_size = 8).unwrap_err(), LoadError::Size { got: 8, .. }));
    assert_eq!(table_with(|t| t.call = None).unwrap_err(), LoadError::Missing("call"));
    assert_eq!(table_with(|t| t.name = std::ptr::null()).unwrap_err(), LoadError::BadString("name"));
    // SAFETY: a null table is allowed input.
    assert_eq!(unsafe { Plugin::from_table(std::ptr::null()) }.unwrap_err(), LoadError::Null);
}

#[test]
fn only_the_same_major_and_an_older_minor_are_accepted() {
    assert!(crate::compatible(1, 0));
    assert!(!crate::compatible(2, 0));
    assert!(!crate::compatible(1, 1));
    assert!(!crate::compatible(0, 9));
}
