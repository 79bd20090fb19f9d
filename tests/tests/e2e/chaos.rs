//! Chaos: optx and its shepherd killed together (as `killall -9 optx` does) at random
//! moments, again and again, then resumed each time. The trials log their own executions.
//! Nothing may be lost or changed, no trial index may run twice, every execution must get
//! exactly the parameters the store holds, and the budget must hold exactly.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;

/// A small, seeded generator: the same kills every run of the test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const KILLS: usize = 60;
const MAX_TRIALS: usize = 200;

#[test]
fn kill_9_of_optx_and_its_shepherd_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let log = tempfile::NamedTempFile::new().unwrap();
    // Each execution logs its index and the values it got; even trials report through
    // the result file (which completes them even when nobody recorded their exit),
    // odd ones on stdout. Durations vary from 0 to 0.4 s.
    let script = format!(
        "printf '%s %s %s\\n' {{trial}} {{x}} {{y}} >> {log}; sleep 0.$(( {{trial}} % 5 )); \
         if [ $(( {{trial}} % 2 )) = 0 ]; then printf '{{{{\"f\": %s, \"g\": %s}}}}' {{x}} {{y}} > \"$OPTX_RESULT_FILE\"; \
         else echo f={{x}} g={{y}}; fi",
        log = log.path().display()
    );
    let runner = format!("command = [\"sh\", \"-c\", {}]", serde_json::to_string(&script).unwrap());
    let params = "x = { type = \"float\", bounds = [0.0, 1.0] }\ny = { type = \"float\", bounds = [0.0, 1.0] }";
    let orch = format!(
        "max_trials = {MAX_TRIALS}\nparallelism = 3\ninitial_seconds_between_polls = 0.05\ntolerated_trial_failure_rate = 1.0"
    );
    let extra = "[metrics.g]\n\n[generation]\nmethod = \"sobol\"";
    let e = Exp::new("chaos", &toml("chaos", params, &runner, &orch, extra));
    let mut rng = Lcg(20261201);
    let mut kills = 0;
    // What each round found completed: it must stay so, with the same values.
    let mut completed: HashMap<u64, serde_json::Value> = HashMap::new();
    for round in 0..KILLS {
        // Killed before it recorded the experiment, a first run is started again as such.
        let started = e.count("SELECT count(*) FROM experiment") > 0;
        let args: &[&str] =
            if started { &["resume", "experiment.toml", "-q"] } else { &["run", "experiment.toml", "-q"] };
        let mut optx = e.spawn(args, "chaos");
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        // Both at once, the shepherd (if it started yet) first by a hair.
        let shepherd = children(optx.id());
        for s in &shepherd {
            signal(*s, "KILL");
        }
        let _ = optx.kill();
        let st = optx.wait().unwrap();
        if st.code().is_some() {
            // It ended before the kill: done already, or refused (it must not be).
            assert_eq!(st.code(), Some(0), "round {round}: {}", e.log("chaos"));
        } else {
            kills += 1;
        }
        if e.count("SELECT count(*) FROM experiment") > 0 {
            for t in e.trials().into_iter().filter(|t| status(t) == "COMPLETED") {
                completed.entry(t["index"].as_u64().unwrap()).or_insert(t["metrics"].clone());
            }
        }
    }
    assert!(kills >= 50, "only {kills} kills landed");
    e.run_ok(&["resume", "experiment.toml", "-q"]);

    let trials = e.trials();
    for (i, metrics) in &completed {
        let t = &trials[*i as usize];
        assert_eq!(status(t), "COMPLETED", "trial {i} was completed after a kill: {t}");
        assert_eq!(&t["metrics"], metrics, "trial {i} kept its values");
    }
    let not_lost: Vec<&serde_json::Value> = trials.iter().filter(|t| t["lost"] == false).collect();
    assert_eq!(not_lost.len(), MAX_TRIALS, "exact budget");
    let mut executions: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    for line in std::fs::read_to_string(log.path()).unwrap().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "a torn log line: {line:?}");
        executions.entry(parts[0].parse().unwrap()).or_default().push((parts[1].into(), parts[2].into()));
    }
    for t in &trials {
        let i = t["index"].as_u64().unwrap();
        let ran = executions.get(&i).map_or(0, Vec::len);
        assert!(ran <= 1, "trial {i} ran {ran} times: {t}");
        if let Some(runs) = executions.get(&i) {
            let p = &t["parameters"];
            for (x, y) in runs {
                assert_eq!(
                    (x.as_str(), y.as_str()),
                    (p["x"].to_string().as_str(), p["y"].to_string().as_str()),
                    "trial {i} ran with other values than the store holds"
                );
            }
        }
        match status(t) {
            "COMPLETED" => {
                assert_eq!(ran, 1, "a completed trial ran: {t}");
                assert_eq!(metric(t, "f"), t["parameters"]["x"].as_f64(), "trial {i} keeps its own value: {t}");
                assert_eq!(metric(t, "g"), t["parameters"]["y"].as_f64(), "{t}");
            }
            "FAILED" => assert_eq!(t["lost"], true, "only losses, no failures: {t}"),
            other => panic!("trial {i} did not end: {other}"),
        }
    }
    // Every completed arm is a distinct arm.
    let mut arms: Vec<String> =
        trials.iter().filter(|t| status(t) == "COMPLETED").map(|t| t["parameters"].to_string()).collect();
    arms.sort();
    arms.dedup();
    assert_eq!(arms.len(), MAX_TRIALS);
}
