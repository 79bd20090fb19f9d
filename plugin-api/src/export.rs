//! The plugin side: the safe traits a plugin implements, and the glue that
//! [`export_plugin!`](crate::export_plugin) writes around them.

use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::abi::*;
use crate::{Error, Observation, OpenRequest, Poll, TrialContext, TrialPoll, TrialRef};

/// A runner, shaped like Ax's `Runner`: deploy a trial, report its status, stop it.
///
/// One instance serves every trial of an experiment, from several threads at once: keep
/// state behind a `Mutex` or atomics. The optional methods' defaults say "not supported"
/// and optx falls back (one `poll_trial` per trial, one `run_trial` per trial, no
/// capacity limit, no way to stop a trial).
pub trait Runner: Send + Sync + 'static {
    /// Create the runner from `[runner] config = { ... }` (in `req.config`). An error here
    /// stops optx before any trial runs, with the message shown to the user.
    fn open(req: &OpenRequest) -> Result<Self, Error>
    where
        Self: Sized;

    /// Deploy one trial. The answer is its run metadata, a JSON object that optx stores
    /// and hands back to every later call about this trial, also after a restart of optx.
    fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error>;

    /// The trial's status now.
    fn poll_trial(&self, trial_index: u64, metadata: &Value) -> Result<Poll, Error>;

    /// Stop a running trial; the answer is stop metadata (a JSON object).
    fn stop_trial(&self, trial_index: u64, metadata: &Value, reason: &str) -> Result<Value, Error> {
        let _ = (trial_index, metadata, reason);
        Err(Error::unsupported())
    }

    /// The status of many trials in one call (a job queue's "list my jobs"). Trials left
    /// out of the answer keep their status.
    fn poll_trials(&self, trials: &[TrialRef]) -> Result<Vec<TrialPoll>, Error> {
        let _ = trials;
        Err(Error::unsupported())
    }

    /// Deploy many trials in one call (`run_trials_in_batches = true`): run metadata for
    /// each, in order.
    fn run_trials(&self, contexts: &[TrialContext]) -> Result<Vec<Value>, Error> {
        let _ = contexts;
        Err(Error::unsupported())
    }

    /// How many more trials can be deployed now; `None`: no limit.
    fn available_capacity(&self) -> Result<Option<usize>, Error> {
        Err(Error::unsupported())
    }
}

/// A metric, shaped like Ax's `Metric`: fetch a trial's observations.
pub trait Metric: Send + Sync + 'static {
    fn open(req: &OpenRequest) -> Result<Self, Error>
    where
        Self: Sized;

    /// Every observation of the trial so far: one final value, or the points of a learning
    /// curve (with a progression). An error with `retry` is asked again later.
    fn fetch(&self, trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error>;
}

pub type RunnerFactory = fn(&OpenRequest) -> Result<Box<dyn Runner>, Error>;
pub type MetricFactory = fn(&OpenRequest) -> Result<Box<dyn Metric>, Error>;

pub fn runner_factory<R: Runner>(req: &OpenRequest) -> Result<Box<dyn Runner>, Error> {
    Ok(Box::new(R::open(req)?))
}

pub fn metric_factory<M: Metric>(req: &OpenRequest) -> Result<Box<dyn Metric>, Error> {
    Ok(Box::new(M::open(req)?))
}

/// What a plugin offers; the macro writes it.
pub struct Definition {
    pub name: &'static str,
    pub version: &'static str,
    pub runners: &'static [(&'static str, RunnerFactory)],
    pub metrics: &'static [(&'static str, MetricFactory)],
}

enum Instance {
    Runner(Box<dyn Runner>),
    Metric(Box<dyn Metric>),
}

/// The table and the strings it points to.
pub struct Table {
    table: OptxPluginV1,
    _strings: Vec<CString>,
    _names: Vec<Vec<*const c_char>>,
}

// SAFETY: the table is immutable once built; its pointers point into `_strings` and
// `_names`, which live (and never move their heap data) as long as the table.
unsafe impl Sync for Table {}
// SAFETY: as above: nothing in it is tied to a thread.
unsafe impl Send for Table {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Build (once) the table of `def`.
pub fn table(def: &'static Definition, open: OpenFn, cell: &'static OnceLock<Table>) -> *const OptxPluginV1 {
    let t = cell.get_or_init(|| {
        let mut strings = vec![cstring(def.name), cstring(def.version)];
        let runners: Vec<CString> = def.runners.iter().map(|(n, _)| cstring(n)).collect();
        let metrics: Vec<CString> = def.metrics.iter().map(|(n, _)| cstring(n)).collect();
        let rp: Vec<*const c_char> = runners.iter().map(|c| c.as_ptr()).collect();
        let mp: Vec<*const c_char> = metrics.iter().map(|c| c.as_ptr()).collect();
        let table = OptxPluginV1 {
            abi_major: crate::ABI_MAJOR,
            abi_minor: crate::ABI_MINOR,
            struct_size: std::mem::size_of::<OptxPluginV1>(),
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            runners: rp.as_ptr(),
            n_runners: rp.len(),
            metrics: mp.as_ptr(),
            n_metrics: mp.len(),
            open: Some(open),
            call: Some(call),
            close: Some(close),
            release: Some(release),
        };
        strings.extend(runners);
        strings.extend(metrics);
        Table { table, _strings: strings, _names: vec![rp, mp] }
    });
    &t.table
}

/// Hand `bytes` to the host through `out`.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn answer(out: *mut OptxBuf, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed) as *mut u8;
    // SAFETY: the caller guarantees `out` is valid for a write.
    unsafe { out.write(OptxBuf { ptr, len }) };
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| format!("{{\"message\":\"cannot encode the answer: {e}\"}}").into_bytes())
}

fn error_bytes(e: &Error) -> Vec<u8> {
    json(e)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    format!("the plugin panicked: {what}")
}

/// Run `f` and write its answer; a panic becomes an error, never an unwind into the host.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn guarded(out: *mut OptxBuf, f: impl FnOnce() -> Result<Vec<u8>, Error>) -> i32 {
    let (code, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (OPTX_OK, bytes),
        Ok(Err(e)) if e.is_unsupported() => (OPTX_UNSUPPORTED, error_bytes(&e)),
        Ok(Err(e)) => (OPTX_ERROR, error_bytes(&e)),
        Err(p) => (OPTX_ERROR, error_bytes(&Error::new(panic_message(p)))),
    };
    // SAFETY: forwarded from the caller.
    unsafe { answer(out, bytes) };
    code
}

/// # Safety
/// `req` is null or valid for `len` bytes.
unsafe fn request<T: DeserializeOwned>(req: *const u8, len: usize) -> Result<T, Error> {
    let bytes: &[u8] = if req.is_null() || len == 0 {
        b"{}"
    } else {
        // SAFETY: the caller guarantees `req` points to `len` readable bytes.
        unsafe { std::slice::from_raw_parts(req, len) }
    };
    serde_json::from_slice(bytes).map_err(|e| Error::new(format!("the plugin cannot read the host's request: {e}")))
}

/// `open` for the plugin `def`.
///
/// # Safety
/// The pointers are as `OpenFn` documents: `req` readable for `len` bytes, `instance` and
/// `out` valid for writes (or null).
pub unsafe fn open(def: &Definition, req: *const u8, len: usize, instance: *mut *mut c_void, out: *mut OptxBuf) -> i32 {
    let run = || -> Result<Vec<u8>, Error> {
        // SAFETY: forwarded from the caller.
        let r: OpenRequest = unsafe { request(req, len) }?;
        let made = match r.kind.as_str() {
            "runner" => match def.runners.iter().find(|(n, _)| *n == r.name) {
                Some((_, f)) => Instance::Runner(f(&r)?),
                None => return Err(Error::new(format!("the plugin `{}` has no runner `{}`", def.name, r.name))),
            },
            "metric" => match def.metrics.iter().find(|(n, _)| *n == r.name) {
                Some((_, f)) => Instance::Metric(f(&r)?),
                None => return Err(Error::new(format!("the plugin `{}` has no metric `{}`", def.name, r.name))),
            },
            other => return Err(Error::new(format!("unknown kind `{other}`: expected \"runner\" or \"metric\""))),
        };
        if instance.is_null() {
            return Err(Error::new("the host passed no place for the instance"));
        }
        let ptr = Box::into_raw(Box::new(made)) as *mut c_void;
        // SAFETY: checked non-null; the caller guarantees it is valid for a write.
        unsafe { instance.write(ptr) };
        Ok(b"{}".to_vec())
    };
    // SAFETY: forwarded from the caller.
    unsafe { guarded(out, run) }
}

#[derive(serde::Deserialize)]
struct StopRequest {
    trial_index: u64,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    reason: String,
}

#[derive(serde::Deserialize)]
struct Trials<T> {
    trials: Vec<T>,
}

/// `call` for every plugin written with the macro.
///
/// # Safety
/// `instance` came from this plugin's `open` and was not closed; `req` is readable for
/// `len` bytes; `out` is valid for a write.
pub unsafe extern "C" fn call(instance: *mut c_void, op: u32, req: *const u8, len: usize, out: *mut OptxBuf) -> i32 {
    if instance.is_null() {
        // SAFETY: forwarded from the caller.
        return unsafe { guarded(out, || Err(Error::new("no instance"))) };
    }
    // SAFETY: `instance` is a live `Box<Instance>` from `open`; calls only borrow it.
    let inst = unsafe { &*(instance as *const Instance) };
    let run = || -> Result<Vec<u8>, Error> {
        match (inst, op) {
            (Instance::Runner(r), OP_RUN_TRIAL) => {
                // SAFETY: forwarded from the caller.
                let ctx: TrialContext = unsafe { request(req, len) }?;
                Ok(json(&r.run_trial(&ctx)?))
            }
            (Instance::Runner(r), OP_POLL_TRIAL) => {
                // SAFETY: forwarded from the caller.
                let t: TrialRef = unsafe { request(req, len) }?;
                Ok(json(&r.poll_trial(t.trial_index, &t.metadata)?))
            }
            (Instance::Runner(r), OP_STOP_TRIAL) => {
                // SAFETY: forwarded from the caller.
                let s: StopRequest = unsafe { request(req, len) }?;
                Ok(json(&r.stop_trial(s.trial_index, &s.metadata, &s.reason)?))
            }
            (Instance::Runner(r), OP_POLL_TRIALS) => {
                // SAFETY: forwarded from the caller.
                let t: Trials<TrialRef> = unsafe { request(req, len) }?;
                Ok(json(&r.poll_trials(&t.trials)?))
            }
            (Instance::Runner(r), OP_RUN_TRIALS) => {
                // SAFETY: forwarded from the caller.
                let t: Trials<TrialContext> = unsafe { request(req, len) }?;
                Ok(json(&r.run_trials(&t.trials)?))
            }
            (Instance::Runner(r), OP_AVAILABLE_CAPACITY) => {
                Ok(json(&serde_json::json!({ "capacity": r.available_capacity()? })))
            }
            (Instance::Metric(m), OP_FETCH) => {
                // SAFETY: forwarded from the caller.
                let t: TrialRef = unsafe { request(req, len) }?;
                Ok(json(&m.fetch(t.trial_index, &t.metadata)?))
            }
            _ => Err(Error::unsupported()),
        }
    };
    // SAFETY: forwarded from the caller.
    unsafe { guarded(out, run) }
}

/// `close` for every plugin written with the macro.
///
/// # Safety
/// `instance` came from `open` and is not used after this call.
pub unsafe extern "C" fn close(instance: *mut c_void) {
    if !instance.is_null() {
        // SAFETY: the caller hands back ownership of the `Box<Instance>` from `open`.
        let inst = unsafe { Box::from_raw(instance as *mut Instance) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(inst)));
    }
}

/// `release` for every plugin written with the macro.
///
/// # Safety
/// `buf` was returned by this plugin and is released once.
pub unsafe extern "C" fn release(buf: OptxBuf) {
    if !buf.ptr.is_null() {
        // SAFETY: `answer` made this pointer from a `Box<[u8]>` of exactly `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
    }
}

/// Write the `optx_plugin_v1` symbol of a plugin: its name, version, and the types that
/// implement [`Runner`] and [`Metric`], each under the name the experiment file uses.
///
/// ```ignore
/// optx_plugin_api::export_plugin! {
///     name: "lab",
///     version: env!("CARGO_PKG_VERSION"),
///     runners: ["robot" => RobotRunner],
///     metrics: ["yield" => YieldMetric],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr,
        runners: [ $( $rname:literal => $rty:ty ),* $(,)? ],
        metrics: [ $( $mname:literal => $mty:ty ),* $(,)? ] $(,)?
    ) => {
        /// The optx plugin entry point.
        #[unsafe(no_mangle)]
        pub extern "C" fn optx_plugin_v1() -> *const $crate::abi::OptxPluginV1 {
            static DEF: $crate::export::Definition = $crate::export::Definition {
                name: $name,
                version: $version,
                runners: &[ $( ($rname, $crate::export::runner_factory::<$rty> as $crate::export::RunnerFactory) ),* ],
                metrics: &[ $( ($mname, $crate::export::metric_factory::<$mty> as $crate::export::MetricFactory) ),* ],
            };
            unsafe extern "C" fn open(
                req: *const u8,
                len: usize,
                instance: *mut *mut ::std::ffi::c_void,
                out: *mut $crate::abi::OptxBuf,
            ) -> i32 {
                // SAFETY: the host keeps the contract of `OpenFn`, which `export::open` needs.
                unsafe { $crate::export::open(&DEF, req, len, instance, out) }
            }
            static TABLE: ::std::sync::OnceLock<$crate::export::Table> = ::std::sync::OnceLock::new();
            $crate::export::table(&DEF, open, &TABLE)
        }
    };
}
