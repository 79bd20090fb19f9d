//! The host side: a plugin's table behind safe types. optx loads a library and hands its
//! table to [`Plugin::from_table`]; a plugin's own tests hand their `optx_plugin_v1` to
//! [`Plugin::from_entry`] and drive the plugin through the real ABI, in process.

use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::abi::*;
use crate::{Error, Observation, OpenRequest, Poll, TrialContext, TrialPoll, TrialRef};

/// Why a table was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    /// `optx_plugin_v1()` returned null.
    Null,
    /// Built against another major version, or a newer minor, of the ABI.
    Version { major: u32, minor: u32 },
    /// The table is smaller than this ABI's.
    Size { got: usize, need: usize },
    /// A function pointer of the table is null.
    Missing(&'static str),
    /// A name is null or not UTF-8.
    BadString(&'static str),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Null => f.write_str("its optx_plugin_v1() returned no table (a null pointer)"),
            LoadError::Version { major, minor } => write!(
                f,
                "it was built for plugin ABI {major}.{minor}, and this optx speaks ABI {}.{} (same major, minor up to {}): rebuild the plugin against this optx's optx-plugin-api",
                crate::ABI_MAJOR,
                crate::ABI_MINOR,
                crate::ABI_MINOR
            ),
            LoadError::Size { got, need } => {
                write!(f, "its table is {got} bytes, smaller than the {need} bytes of ABI {}.0", crate::ABI_MAJOR)
            }
            LoadError::Missing(what) => write!(f, "its table has no `{what}` function (a null pointer)"),
            LoadError::BadString(what) => write!(f, "its table's `{what}` is null or not UTF-8"),
        }
    }
}

impl std::error::Error for LoadError {}

/// A failed call, as the host sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The plugin reported an error.
    Failed(Error),
    /// The plugin does not implement the operation.
    Unsupported,
    /// The plugin broke the protocol (invalid JSON, an unknown status code, ...).
    Protocol(String),
}

impl CallError {
    /// Whether the same call may succeed later.
    pub fn retry(&self) -> bool {
        matches!(self, CallError::Failed(e) if e.retry)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Failed(e) => f.write_str(&e.message),
            CallError::Unsupported => f.write_str("not supported by the plugin"),
            CallError::Protocol(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for CallError {}

#[derive(Clone, Copy)]
struct Fns {
    open: OpenFn,
    call: CallFn,
    close: CloseFn,
    release: ReleaseFn,
}

/// A checked plugin table.
#[derive(Clone)]
pub struct Plugin {
    fns: Fns,
    pub name: String,
    pub version: String,
    pub abi: (u32, u32),
    pub runners: Vec<String>,
    pub metrics: Vec<String>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("abi", &self.abi)
            .field("runners", &self.runners)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string that lives as long as the table.
unsafe fn string(p: *const c_char, what: &'static str) -> Result<String, LoadError> {
    if p.is_null() {
        return Err(LoadError::BadString(what));
    }
    // SAFETY: non-null, and the caller guarantees NUL termination.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(str::to_string).map_err(|_| LoadError::BadString(what))
}

/// # Safety
/// `p` is null (with `n == 0`) or points to `n` valid name pointers.
unsafe fn strings(p: *const *const c_char, n: usize, what: &'static str) -> Result<Vec<String>, LoadError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(LoadError::BadString(what));
    }
    // SAFETY: the caller guarantees `n` readable pointers at `p`.
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    // SAFETY: each is a NUL-terminated string of the table (or null, refused).
    ptrs.iter().map(|&s| unsafe { string(s, what) }).collect()
}

impl Plugin {
    /// Check a table: the version first, then its size, functions and names.
    ///
    /// # Safety
    /// `table` is null or points to a table laid out as [`OptxPluginV1`] (at least its two
    /// version fields, for any version) that stays valid and unchanged for the rest of the
    /// process, and whose functions keep the contract of `abi`.
    pub unsafe fn from_table(table: *const OptxPluginV1) -> Result<Self, LoadError> {
        if table.is_null() {
            return Err(LoadError::Null);
        }
        // The version fields are first in every version of the table: read them alone.
        // SAFETY: non-null, and the caller guarantees at least these fields.
        let (major, minor) = unsafe { ((*table).abi_major, (*table).abi_minor) };
        if !crate::compatible(major, minor) {
            return Err(LoadError::Version { major, minor });
        }
        // SAFETY: same major: the table is at least `struct_size` bytes of this layout.
        let size = unsafe { (*table).struct_size };
        let need = std::mem::size_of::<OptxPluginV1>();
        if size < need {
            return Err(LoadError::Size { got: size, need });
        }
        // SAFETY: the whole table of this version is there (checked size).
        let t = unsafe { &*table };
        let fns = Fns {
            open: t.open.ok_or(LoadError::Missing("open"))?,
            call: t.call.ok_or(LoadError::Missing("call"))?,
            close: t.close.ok_or(LoadError::Missing("close"))?,
            release: t.release.ok_or(LoadError::Missing("release"))?,
        };
        Ok(Plugin {
            fns,
            // SAFETY: the table's strings live as long as the table (the caller's promise).
            name: unsafe { string(t.name, "name") }?,
            // SAFETY: as above.
            version: unsafe { string(t.version, "version") }?,
            abi: (major, minor),
            // SAFETY: as above, with the counts the table gives.
            runners: unsafe { strings(t.runners, t.n_runners, "runners") }?,
            // SAFETY: as above.
            metrics: unsafe { strings(t.metrics, t.n_metrics, "metrics") }?,
        })
    }

    /// Call a plugin's entry point and check its table: the in-process test harness.
    ///
    /// ```ignore
    /// // in the plugin's tests:
    /// let plugin = unsafe { Plugin::from_entry(crate::optx_plugin_v1) }.unwrap();
    /// let runner = plugin.open_runner("robot", &serde_json::json!({}), "test").unwrap();
    /// ```
    ///
    /// # Safety
    /// `entry` keeps the contract of [`Plugin::from_table`].
    pub unsafe fn from_entry(entry: EntryFn) -> Result<Self, LoadError> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_table(entry()) }
    }

    fn open(&self, kind: &str, name: &str, config: &Value, experiment: &str) -> Result<Instance, CallError> {
        let offered = if kind == "runner" { &self.runners } else { &self.metrics };
        if !offered.iter().any(|n| n == name) {
            return Err(CallError::Protocol(format!(
                "the plugin `{}` offers no {kind} `{name}`; its {kind}s: {}",
                self.name,
                if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
            )));
        }
        let req =
            OpenRequest { kind: kind.into(), name: name.into(), config: config.clone(), experiment: experiment.into() };
        let req = serde_json::to_vec(&req).map_err(|e| CallError::Protocol(e.to_string()))?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let mut out = OptxBuf::empty();
        // SAFETY: the request is a live byte slice; `ptr` and `out` are valid for writes; the
        // table's contract is the promise of `from_table`.
        let code = unsafe { (self.fns.open)(req.as_ptr(), req.len(), &mut ptr, &mut out) };
        let bytes = self.fns.take(out);
        answer(code, bytes, "open")?;
        if ptr.is_null() {
            return Err(CallError::Protocol("open succeeded but returned no instance".into()));
        }
        Ok(Instance { fns: self.fns, ptr })
    }

    /// Create the runner `name` with its `config`.
    pub fn open_runner(&self, name: &str, config: &Value, experiment: &str) -> Result<RunnerClient, CallError> {
        Ok(RunnerClient { inst: Arc::new(self.open("runner", name, config, experiment)?) })
    }

    /// Create the metric `name` with its `config`.
    pub fn open_metric(&self, name: &str, config: &Value, experiment: &str) -> Result<MetricClient, CallError> {
        Ok(MetricClient { inst: Arc::new(self.open("metric", name, config, experiment)?) })
    }
}

impl Fns {
    /// Copy out and release a buffer that the plugin's call or open just returned.
    fn take(self, out: OptxBuf) -> Vec<u8> {
        if out.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the plugin returned `len` readable bytes at `ptr`, ours until released.
        let bytes = unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec();
        // SAFETY: released once, with the plugin's own function.
        unsafe { (self.release)(out) };
        bytes
    }
}

/// Turn a status code and its buffer into a result.
fn answer(code: i32, bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, CallError> {
    match code {
        OPTX_OK => Ok(bytes),
        OPTX_UNSUPPORTED => Err(CallError::Unsupported),
        OPTX_ERROR => Err(CallError::Failed(serde_json::from_slice::<Error>(&bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            Error::new(if text.is_empty() { format!("{what} failed and said nothing") } else { text })
        }))),
        c => Err(CallError::Protocol(format!("{what} returned the unknown status code {c}"))),
    }
}

/// An open runner or metric of a plugin; closed when the last handle is dropped.
struct Instance {
    fns: Fns,
    ptr: *mut c_void,
}

// SAFETY: the ABI requires an instance to accept calls from any thread, also at once.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `open` and no call on it is running (we own the last handle).
        unsafe { (self.fns.close)(self.ptr) };
    }
}

impl Instance {
    fn call<T: DeserializeOwned>(&self, op: u32, req: &impl Serialize, what: &str) -> Result<T, CallError> {
        let req = serde_json::to_vec(req).map_err(|e| CallError::Protocol(e.to_string()))?;
        let mut out = OptxBuf::empty();
        // SAFETY: `ptr` is a live instance; the request is a live slice; `out` is writable.
        let code = unsafe { (self.fns.call)(self.ptr, op, req.as_ptr(), req.len(), &mut out) };
        let bytes = answer(code, self.fns.take(out), what)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let text = String::from_utf8_lossy(&bytes);
            let shown: String = text.chars().take(200).collect();
            CallError::Protocol(format!("the plugin's answer to {what} is not what the ABI expects ({e}): {shown:?}"))
        })
    }
}

fn object(v: Value, what: &str) -> Result<Value, CallError> {
    match v {
        Value::Object(_) => Ok(v),
        other => Err(CallError::Protocol(format!("{what} must answer a JSON object, not {other}"))),
    }
}

/// A plugin's runner.
#[derive(Clone)]
pub struct RunnerClient {
    inst: Arc<Instance>,
}

impl RunnerClient {
    pub fn run_trial(&self, ctx: &TrialContext) -> Result<Value, CallError> {
        object(self.inst.call(OP_RUN_TRIAL, ctx, "run_trial")?, "run_trial")
    }

    /// The answer may name its trial (`"trial_index"`); it must then be the one asked about.
    pub fn poll_trial(&self, trial_index: u64, metadata: &Value) -> Result<Poll, CallError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            trial_index: Option<u64>,
            #[serde(flatten)]
            poll: Poll,
        }
        let req = serde_json::json!({"trial_index": trial_index, "metadata": metadata});
        let a: Answer = self.inst.call(OP_POLL_TRIAL, &req, "poll_trial")?;
        match a.trial_index {
            Some(other) if other != trial_index => Err(CallError::Protocol(format!(
                "poll_trial was asked about trial {trial_index} and answered about trial {other}"
            ))),
            _ => Ok(a.poll),
        }
    }

    pub fn stop_trial(&self, trial_index: u64, metadata: &Value, reason: &str) -> Result<Value, CallError> {
        let req = serde_json::json!({"trial_index": trial_index, "metadata": metadata, "reason": reason});
        object(self.inst.call(OP_STOP_TRIAL, &req, "stop_trial")?, "stop_trial")
    }

    pub fn poll_trials(&self, trials: &[TrialRef]) -> Result<Vec<TrialPoll>, CallError> {
        self.inst.call(OP_POLL_TRIALS, &serde_json::json!({ "trials": trials }), "poll_trials")
    }

    pub fn run_trials(&self, contexts: &[TrialContext]) -> Result<Vec<Value>, CallError> {
        let v: Vec<Value> = self.inst.call(OP_RUN_TRIALS, &serde_json::json!({ "trials": contexts }), "run_trials")?;
        if v.len() != contexts.len() {
            return Err(CallError::Protocol(format!(
                "run_trials was given {} trials and answered run metadata for {}",
                contexts.len(),
                v.len()
            )));
        }
        v.into_iter().map(|m| object(m, "run_trials (each run metadata)")).collect()
    }

    pub fn available_capacity(&self) -> Result<Option<usize>, CallError> {
        #[derive(serde::Deserialize)]
        struct Capacity {
            capacity: Option<usize>,
        }
        let c: Capacity = self.inst.call(OP_AVAILABLE_CAPACITY, &serde_json::json!({}), "available_capacity")?;
        Ok(c.capacity)
    }
}

/// A plugin's metric.
#[derive(Clone)]
pub struct MetricClient {
    inst: Arc<Instance>,
}

impl MetricClient {
    pub fn fetch(&self, trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, CallError> {
        self.inst.call(OP_FETCH, &serde_json::json!({"trial_index": trial_index, "metadata": metadata}), "fetch")
    }
}
