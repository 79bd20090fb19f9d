//! The raw C ABI: what crosses the library boundary. `include/optx_plugin.h` is the same
//! thing for C.

use std::ffi::{c_char, c_void};

/// A buffer of UTF-8 JSON that the plugin allocated; the host hands it back to
/// [`OptxPluginV1::release`] when it has read it.
#[repr(C)]
#[derive(Debug)]
pub struct OptxBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

impl OptxBuf {
    pub const fn empty() -> Self {
        OptxBuf { ptr: std::ptr::null_mut(), len: 0 }
    }
}

/// A call succeeded: the output buffer holds its JSON answer.
pub const OPTX_OK: i32 = 0;
/// A call failed: the output buffer holds `{"message": "...", "retry": bool}`.
pub const OPTX_ERROR: i32 = 1;
/// The instance does not implement this operation (the host falls back).
pub const OPTX_UNSUPPORTED: i32 = 2;

/// Runner: deploy one trial. Request: a [`crate::TrialContext`]; answer: run metadata
/// (a JSON object).
pub const OP_RUN_TRIAL: u32 = 1;
/// Runner: status of one trial. Request `{"trial_index", "metadata"}`; answer
/// `{"status": "running", "reason": null}`.
pub const OP_POLL_TRIAL: u32 = 2;
/// Runner: stop a trial. Request `{"trial_index", "metadata", "reason"}`; answer: stop
/// metadata (a JSON object).
pub const OP_STOP_TRIAL: u32 = 3;
/// Runner: status of many trials in one call. Request `{"trials": [{"trial_index",
/// "metadata"}]}`; answer `[{"trial_index", "status", "reason"}]`.
pub const OP_POLL_TRIALS: u32 = 4;
/// Runner: deploy many trials in one call. Request `{"trials": [context, ...]}`; answer: an
/// array of run metadata, in the same order.
pub const OP_RUN_TRIALS: u32 = 5;
/// Runner: how many more trials it can take now. Request `{}`; answer `{"capacity": n}`
/// (`null`: no limit).
pub const OP_AVAILABLE_CAPACITY: u32 = 6;
/// Metric: observations of one trial. Request `{"trial_index", "metadata"}`; answer
/// `[{"progression": p|null, "mean": m, "sem": s|null}]`.
pub const OP_FETCH: u32 = 7;

/// `open`: create an instance of a runner or metric. Request `{"kind": "runner"|"metric",
/// "name", "config", "experiment"}`; on success `*instance` is set and the answer is `{}`.
pub type OpenFn =
    unsafe extern "C" fn(req: *const u8, req_len: usize, instance: *mut *mut c_void, out: *mut OptxBuf) -> i32;
/// `call`: one operation (`OP_*`) on an instance. Calls on one instance may come from
/// several threads at once.
pub type CallFn =
    unsafe extern "C" fn(instance: *mut c_void, op: u32, req: *const u8, req_len: usize, out: *mut OptxBuf) -> i32;
/// `close`: the host is done with an instance.
pub type CloseFn = unsafe extern "C" fn(instance: *mut c_void);
/// `release`: free a buffer the plugin returned.
pub type ReleaseFn = unsafe extern "C" fn(buf: OptxBuf);

/// The table `optx_plugin_v1()` returns. It lives as long as the library (forever: optx
/// never unloads a plugin). `abi_major` and `abi_minor` come first in every version, so a
/// host can read them before anything else.
#[repr(C)]
#[derive(Debug)]
pub struct OptxPluginV1 {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of` the table as the plugin built it: later minors only append fields.
    pub struct_size: usize,
    /// The plugin's name and version, NUL-terminated UTF-8.
    pub name: *const c_char,
    pub version: *const c_char,
    /// The runners it offers: `n_runners` NUL-terminated names.
    pub runners: *const *const c_char,
    pub n_runners: usize,
    /// The metrics it offers.
    pub metrics: *const *const c_char,
    pub n_metrics: usize,
    pub open: Option<OpenFn>,
    pub call: Option<CallFn>,
    pub close: Option<CloseFn>,
    pub release: Option<ReleaseFn>,
}

/// The exported symbol's type.
pub type EntryFn = unsafe extern "C" fn() -> *const OptxPluginV1;
