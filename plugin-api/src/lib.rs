//! The optx plugin ABI: the only crate a plugin author needs.
//!
//! A plugin is a `cdylib` exporting one symbol, `optx_plugin_v1`, that returns a
//! `#[repr(C)]` table ([`abi::OptxPluginV1`]): the ABI's major and minor version and the
//! table's size, the plugin's name and version, the runners and metrics it offers, and four
//! `extern "C"` functions: `open` (create a runner or metric from its config), `call` (one
//! operation on it, JSON in and out), `close`, and `release` (free a buffer the plugin
//! returned). optx checks the version before anything else, and never unloads a plugin.
//! `include/optx_plugin.h` is the same ABI for C and any language with a C ABI.
//!
//! In Rust, implement [`Runner`] (shaped like Ax's `Runner`: `run_trial`, `poll_trial`,
//! optional `stop_trial`, batch `poll_trials`/`run_trials` and `available_capacity`) and
//! [`Metric`] (`fetch`), and let [`export_plugin!`] write the glue. A panic in your code
//! becomes an error of that call; it never unwinds into optx.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "sphere"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! optx-plugin-api = { path = "../optx/plugin-api" }   # where your optx checkout is
//! serde_json = "1"
//! ```
//!
//! `src/lib.rs`:
//! ```
//! use optx_plugin_api::{export_plugin, Error, Metric, Observation, OpenRequest, Poll, Runner, TrialContext};
//! use serde_json::{json, Value};
//!
//! /// Computes the sphere function at once and keeps the value in the run metadata.
//! pub struct Sphere;
//!
//! impl Runner for Sphere {
//!     fn open(_req: &OpenRequest) -> Result<Self, Error> {
//!         Ok(Sphere)
//!     }
//!     fn run_trial(&self, ctx: &TrialContext) -> Result<Value, Error> {
//!         let f: f64 = ctx.parameters.values().filter_map(Value::as_f64).map(|x| x * x).sum();
//!         Ok(json!({ "f": f }))
//!     }
//!     fn poll_trial(&self, _trial_index: u64, _metadata: &Value) -> Result<Poll, Error> {
//!         Ok(Poll::completed())
//!     }
//! }
//!
//! /// Reads the value back from the run metadata.
//! pub struct F;
//!
//! impl Metric for F {
//!     fn open(_req: &OpenRequest) -> Result<Self, Error> {
//!         Ok(F)
//!     }
//!     fn fetch(&self, _trial_index: u64, metadata: &Value) -> Result<Vec<Observation>, Error> {
//!         let f = metadata["f"].as_f64().ok_or_else(|| Error::new("no `f` in the run metadata"))?;
//!         Ok(vec![Observation::new(f)])
//!     }
//! }
//!
//! export_plugin! {
//!     name: "sphere",
//!     version: "0.1.0",
//!     runners: ["sphere" => Sphere],
//!     metrics: ["f" => F],
//! }
//!
//! // A test drives the plugin through its table, as optx would (the harness):
//! let plugin = unsafe { optx_plugin_api::host::Plugin::from_entry(optx_plugin_v1) }.unwrap();
//! let runner = plugin.open_runner("sphere", &json!({}), "test").unwrap();
//! let ctx = TrialContext {
//!     trial_index: 0,
//!     parameters: json!({"x": 3.0, "y": 4.0}).as_object().unwrap().clone(),
//!     trial_dir: "/tmp".into(),
//!     experiment: "test".into(),
//!     slot: 0,
//!     config: json!({}),
//! };
//! let meta = runner.run_trial(&ctx).unwrap();
//! assert_eq!(runner.poll_trial(0, &meta).unwrap(), Poll::completed());
//! let f = plugin.open_metric("f", &json!({}), "test").unwrap();
//! assert_eq!(f.fetch(0, &meta).unwrap(), vec![Observation::new(25.0)]);
//! ```
//!
//! And in the experiment file:
//! ```toml
//! [runner]
//! kind = "plugin"
//! library = "target/release/libsphere.so"
//! name = "sphere"
//!
//! [metrics.f]
//! plugin = { library = "target/release/libsphere.so", name = "f" }
//! ```

pub mod abi;
pub mod export;
pub mod host;
mod types;

pub use export::{Metric, Runner};
pub use types::{Error, Observation, OpenRequest, Poll, Status, TrialContext, TrialPoll, TrialRef};

/// The major version of the ABI: a host refuses a plugin of another major version.
pub const ABI_MAJOR: u32 = 1;
/// The minor version: a host accepts a plugin of the same major and a lower or equal minor.
pub const ABI_MINOR: u32 = 0;
/// The symbol every plugin exports.
pub const ENTRY_SYMBOL: &str = "optx_plugin_v1";

/// The words a plugin runner uses for the status of a trial (Ax's `TrialStatus` names).
pub const STATUS_WORDS: [&str; 5] = ["staged", "running", "completed", "failed", "abandoned"];

/// Whether a host of this ABI accepts a plugin built against `major.minor`.
pub fn compatible(major: u32, minor: u32) -> bool {
    // The host's minor must be at least the plugin's.
    major == ABI_MAJOR && ABI_MINOR.checked_sub(minor).is_some()
}

#[cfg(test)]
mod tests;
