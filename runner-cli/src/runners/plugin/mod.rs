//! `[runner] kind = "plugin"` and `[metrics.X] plugin = ...`: runners and metrics in a cdylib
//! that implements the optx plugin ABI. The only module that sees the ABI.
//!
//! A library is loaded once per process and never unloaded. A plugin call that does not
//! return within `call_timeout` fails its trials while optx goes on (see `calls`); the
//! thread stuck in it is left behind (a thread cannot be killed).

mod calls;
mod metrics;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use optx_plugin_api::host::Plugin;

pub use metrics::PluginMetrics;
pub use runner::{plugin_runner, PluginBackend, PluginRunner};

use crate::domain::{ExperimentSpec, MetricRule, PluginRef, RunnerSpec};

/// Libraries loaded so far, by path: each is loaded once and never unloaded.
fn loaded() -> &'static Mutex<BTreeMap<PathBuf, Plugin>> {
    static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, Plugin>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Load a plugin library and check its table (the ABI version first). Errors name the
/// place in the experiment file that names the library.
/// The file names a library named `name` may have: `lib<name>.so` and `<name>.so` first,
/// then the name as given (an executable of the plugin's name beside optx is no library).
fn file_names(name: &str) -> Vec<String> {
    if name.ends_with(".so") {
        return vec![name.to_string()];
    }
    vec![format!("lib{name}.so"), format!("{name}.so"), name.to_string()]
}

/// Where a library named without a directory is looked for, in order: the experiment's
/// directory, each directory of `OPTX_PLUGIN_PATH`, and the optx binary's own directory
/// (a workspace build puts the plugins beside it, in target/debug or target/release).
fn search_dirs(r: &PluginRef) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = r.library.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(p) = std::env::var_os("OPTX_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        dirs.push(d);
    }
    dirs
}

/// The file of the plugin library `r` names.
fn resolve(r: &PluginRef) -> Result<PathBuf, String> {
    // A directory of the plugin's name (its sources, say) is not the library.
    if r.library.is_file() || (r.by_name.is_none() && r.library.exists()) {
        return Ok(r.library.clone());
    }
    let Some(name) = &r.by_name else {
        return Err(format!(
            "{}: the plugin library {} does not exist (build it first, e.g. `cargo build --workspace`)",
            r.origin,
            r.library.display()
        ));
    };
    let dirs = search_dirs(r);
    for d in &dirs {
        for f in file_names(name) {
            if d.join(&f).is_file() {
                return Ok(d.join(f));
            }
        }
    }
    Err(format!(
        "{}: the plugin library `{name}` is in none of {} (OPTX_PLUGIN_PATH adds directories; build it first, e.g. `cargo build --workspace`)",
        r.origin,
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

/// libloading says "dlopen failed"; the loader's own words (`invalid ELF header`, a missing
/// dependency's name) are its source.
fn loader_message(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => s.to_string(),
        None => e.to_string(),
    }
}

pub fn load(r: &PluginRef) -> Result<Plugin, String> {
    let mut cache = loaded().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(&r.library) {
        return Ok(p.clone());
    }
    let file = resolve(r)?;
    let path = file.display();
    match std::fs::metadata(&file) {
        Err(e) => return Err(format!("{}: the plugin library {path}: {e}", r.origin)),
        // Opening a FIFO or a device to load it would block, or worse.
        Ok(m) if !m.is_file() => {
            return Err(format!("{}: the plugin library {path} is not a regular file (a .so file)", r.origin))
        }
        Ok(_) => {}
    }
    // SAFETY: loading a library runs its initializers. A library named as an optx plugin is
    // code the user chose to run, like the command of a command runner.
    let lib = unsafe { libloading::Library::new(&file) }
        .map_err(|e| format!("{}: cannot load the plugin library {path}: {}", r.origin, loader_message(&e)))?;
    // SAFETY: `optx_plugin_v1` has the ABI's entry type in every optx plugin; the pointer is
    // copied out and used only while the library stays loaded (forever, below).
    let entry = unsafe { lib.get::<optx_plugin_api::abi::EntryFn>(optx_plugin_api::ENTRY_SYMBOL.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| {
            format!(
                "{}: {path} is not an optx plugin: it does not export `{}`",
                r.origin,
                optx_plugin_api::ENTRY_SYMBOL
            )
        })?;
    // SAFETY: the entry point of a loaded library that is never unloaded, so its table and
    // strings live as long as the process.
    let plugin = unsafe { Plugin::from_entry(entry) }.map_err(|e| format!("{}: {path} is refused: {e}", r.origin))?;
    // Never unloaded: threads left behind by a call timeout may still run its code.
    std::mem::forget(lib);
    cache.insert(r.library.clone(), plugin.clone());
    Ok(plugin)
}

/// Load the library of `r` and check that it offers `r.name` as a `kind`.
pub fn check(r: &PluginRef, kind: &str) -> Result<Plugin, String> {
    let p = load(r)?;
    let offered = if kind == "runner" { &p.runners } else { &p.metrics };
    if !offered.contains(&r.name) {
        let list = if offered.is_empty() { "none".to_string() } else { offered.join(", ") };
        return Err(format!(
            "{}: the plugin `{}` ({}) offers no {kind} `{}`; its {kind}s: {list}",
            r.origin,
            p.name,
            r.library.display(),
            r.name
        ));
    }
    Ok(p)
}

/// Every plugin library an experiment names, loaded and checked: one line per runner or
/// metric (what it is, the plugin's name, version and ABI), or every error.
pub fn check_all(spec: &ExperimentSpec) -> Result<Vec<String>, Vec<String>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut wanted = Vec::new();
    if let RunnerSpec::Plugin(p) = &spec.runner {
        wanted.push((format!("runner `{}`", p.plugin.name), &p.plugin, "runner"));
    }
    for (name, rule) in &spec.metrics {
        if let MetricRule::Plugin(r) = rule {
            wanted.push((format!("metric `{name}` = `{}`", r.name), r, "metric"));
        }
    }
    for (what, r, kind) in wanted {
        match check(r, kind) {
            Ok(p) => found.push(format!("{what}: {} {} (ABI {}.{})", p.name, p.version, p.abi.0, p.abi.1)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}
