//! The cost of one call into a plugin through the ABI, as optx's plugin runner makes it:
//! the request serialized to JSON, the `extern "C"` call, the plugin's glue and code, the
//! answer copied out, released and parsed.
//!
//! Usage: plugin_call path/to/liboptx_hartmann6.so   (bench/plugin.py runs it)

use std::time::Instant;

use optx::domain::PluginRef;
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median nanoseconds per call over `rounds` rounds of `n` calls.
fn per_call(rounds: usize, n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n {
        f(); // warm up
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    median(samples)
}

fn main() {
    let lib = std::env::args().nth(1).expect("usage: plugin_call path/to/liboptx_hartmann6.so");
    let r = PluginRef {
        library: lib.into(),
        by_name: None,
        name: "hartmann6".into(),
        config: json!({}),
        origin: "bench".into(),
    };
    let plugin = optx::runners::plugin::load(&r).unwrap_or_else(|e| panic!("{e}"));
    let runner = plugin.open_runner("hartmann6", &json!({"delay_seconds": 0}), "bench").expect("open runner");
    let meta = json!({"trial_dir": "/nonexistent", "started": 0.0, "delay": 0.0});
    let capacity = per_call(101, 2000, || {
        let _ = runner.available_capacity();
    });
    let poll = per_call(101, 2000, || {
        runner.poll_trial(7, &meta).expect("poll");
    });
    println!("one plugin call through the ABI, median of 101 rounds of 2000 calls:");
    println!("  available_capacity (unsupported: the round trip alone): {capacity:.0} ns");
    println!("  poll_trial (JSON request with run metadata, answer parsed): {poll:.0} ns");
}
