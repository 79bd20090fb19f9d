//! A plugin that misbehaves on purpose, for optx's tests. Each trial's `mode` parameter
//! picks what goes wrong:
//!
//! - `ok`: completes; the metric `value` is the trial's `x`.
//! - `panic`: `run_trial` panics.
//! - `not_object`: `run_trial` answers a string instead of run metadata (an object).
//! - `bad_json`: `poll_trial` answers bytes that are not JSON.
//! - `other_trial`: `poll_trial` answers about another trial.
//! - `hang`: `poll_trial` does not return (for an hour).
//! - `fetch_error`: the metric fails, and says retrying will not help.
//! - `abandon`: `poll_trial` says the trial was abandoned (its system gave up on it).
//!
//! The table is written by hand around the crate's glue, so that `call` can break the
//! protocol in ways the safe traits do not allow.

use std::ffi::c_void;
use std::sync::OnceLock;

use optx_plugin_api::abi::{OptxBuf, OptxPluginV1, OPTX_OK, OP_POLL_TRIAL};
use optx_plugin_api::export::{self, Definition, MetricFactory, RunnerFactory};
use optx_plugin_api::{Error, Metric, Observation, OpenRequest, Poll, Runner, TrialContext};
use serde_json::{json, Value};

pub struct Misbehave;

impl Runner for Misbehave {
    fn open(_req: &OpenRequest) -> Result<Self, Error> {
        Ok(Misbehave)
    }

    fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error> {
        let mode = ctx.parameters.get("mode").and_then(Value::as_str).unwrap_or("ok").to_string();
        match mode.as_str() {
            "panic" => panic!("misbehave: a panic in run_trial of trial {}", ctx.trial_index),
            "not_object" => Ok(json!("this is not run metadata")),
            _ => Ok(json!({ "mode": mode, "x": ctx.number("x").unwrap_or(0.0) })),
        }
    }

    fn poll_trial(&self, _trial_index: u64, metadata: &Value) -> Result<Poll, Error> {
        if metadata["mode"] == "hang" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        if metadata["mode"] == "abandon" {
            return Ok(Poll::abandoned("misbehave: the queue dropped the job"));
        }
        Ok(Poll::completed())
    }
}

pub struct ValueMetric;

impl Metric for ValueMetric {
    fn open(_req: &OpenRequest) -> Result<Self, Error> {
        Ok(ValueMetric)
    }

    fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
        if metadata["mode"] == "fetch_error" {
            return Err(Error::new("misbehave: the metric's database refused the query"));
        }
        Ok(vec![Observation::new(metadata["x"].as_f64().unwrap_or(0.0))])
    }
}

static DEF: Definition = Definition {
    name: "misbehave",
    version: env!("CARGO_PKG_VERSION"),
    runners: &[("misbehave", export::runner_factory::<Misbehave> as RunnerFactory)],
    metrics: &[("value", export::metric_factory::<ValueMetric> as MetricFactory)],
};

unsafe extern "C" fn open(req: *const u8, len: usize, instance: *mut *mut c_void, out: *mut OptxBuf) -> i32 {
    // SAFETY: the host keeps the contract of `OpenFn`.
    unsafe { export::open(&DEF, req, len, instance, out) }
}

/// Write raw bytes as the answer, allocated as the crate's `release` expects.
///
/// # Safety
/// `out` is valid for a write.
unsafe fn raw_answer(out: *mut OptxBuf, bytes: &[u8]) {
    let b: Box<[u8]> = bytes.into();
    let len = b.len();
    let ptr = Box::into_raw(b) as *mut u8;
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(OptxBuf { ptr, len }) };
}

unsafe extern "C" fn call(instance: *mut c_void, op: u32, req: *const u8, len: usize, out: *mut OptxBuf) -> i32 {
    if op == OP_POLL_TRIAL && !req.is_null() {
        // SAFETY: the host passes `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(req, len) };
        let r: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let index = r["trial_index"].as_u64().unwrap_or(0);
        match r["metadata"]["mode"].as_str() {
            Some("bad_json") => {
                // SAFETY: `out` is writable (the host's contract).
                unsafe { raw_answer(out, b"{\"status\": compl") };
                return OPTX_OK;
            }
            Some("other_trial") => {
                let a = json!({"trial_index": index + 1000, "status": "completed"}).to_string();
                // SAFETY: as above.
                unsafe { raw_answer(out, a.as_bytes()) };
                return OPTX_OK;
            }
            _ => {}
        }
    }
    // SAFETY: forwarded unchanged from the host.
    unsafe { export::call(instance, op, req, len, out) }
}

/// The crate's table, with `call` replaced.
struct Patched(OptxPluginV1);

// SAFETY: immutable after it is built; its pointers point into the crate's static table.
unsafe impl Sync for Patched {}
// SAFETY: as above.
unsafe impl Send for Patched {}

/// The optx plugin entry point.
#[unsafe(no_mangle)]
pub extern "C" fn optx_plugin_v1() -> *const OptxPluginV1 {
    static TABLE: OnceLock<export::Table> = OnceLock::new();
    static PATCHED: OnceLock<Patched> = OnceLock::new();
    let p = PATCHED.get_or_init(|| {
        // SAFETY: `table` returns a pointer to the table in TABLE, which lives forever.
        let t = unsafe { &*export::table(&DEF, open, &TABLE) };
        Patched(OptxPluginV1 { call: Some(call), ..*t })
    });
    &p.0
}
