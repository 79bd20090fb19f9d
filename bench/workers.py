#!/usr/bin/env python3
"""Several workers on one SQLite store (`optx run --join`).

1. sharing: 4 workers x parallelism 1 against 1 worker x parallelism 4, on a 0.1 s
   script, interleaved rounds: the wall times and their ratio (target: within 15%);
2. many workers: 64 workers with instant trials (`sh -c 'echo f=1'`), sobol: total
   trials/s, lock errors, trials left unended, exact budget (target >= 300 trials/s);
3. the store's write lock: how long each transaction waited for it and held it, from
   optx's own debug log (`RUST_LOG=optx::store::lock=debug`), with sobol and with the GP
   (target: p99 held < 50 ms with sobol).

Usage: bench/workers.py [path/to/optx] [--rounds N] [--workers N] [--trials N]
(bench/workers.sh builds the release binary and calls this.)
"""
import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

EXPERIMENT = """[experiment]
name = "{name}"
seed = 1

[parameters]
x = {{ type = "float", bounds = [0.0, 1.0] }}
y = {{ type = "float", bounds = [0.0, 1.0] }}

[objective]
minimize = "f"

[runner]
command = ["sh", "-c", "{script}"]

[orchestration]
max_trials = {trials}
parallelism = {parallelism}
initial_seconds_between_polls = 0
tolerated_trial_failure_rate = 0.0

[generation]
method = "{method}"
"""


def write(d, name, script, trials, parallelism, method="sobol"):
    with open(os.path.join(d, "experiment.toml"), "w") as f:
        f.write(EXPERIMENT.format(name=name, script=script, trials=trials, parallelism=parallelism, method=method))


def run_workers(optx, d, n, join=True, env=None):
    """Start n workers at once; wait for all. Returns (wall seconds, [(code, stderr)])."""
    args = [optx, "run", "experiment.toml", "--quiet"] + (["--join"] if join else [])
    start = time.perf_counter()
    procs = [subprocess.Popen(args, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
             for _ in range(n)]
    outs = [(p.wait(), p.stderr.read().decode(errors="replace")) for p in procs]
    return time.perf_counter() - start, outs


def check(d, name, trials):
    c = sqlite3.connect(os.path.join(d, ".optx", f"{name}.db"))
    total, not_lost = c.execute("SELECT count(*), sum(lost = 0) FROM trials").fetchone()
    unended = c.execute(
        "SELECT count(*) FROM trials WHERE status NOT IN ('COMPLETED', 'FAILED', 'ABANDONED', 'EARLY_STOPPED')").fetchone()[0]
    completed = c.execute("SELECT count(*) FROM trials WHERE status = 'COMPLETED'").fetchone()[0]
    arms = c.execute("SELECT count(DISTINCT arm_key) FROM trials WHERE status = 'COMPLETED'").fetchone()[0]
    workers = c.execute("SELECT count(DISTINCT session) FROM trials").fetchone()[0]
    return {"total": total, "not_lost": not_lost or 0, "unended": unended, "completed": completed,
            "distinct_arms": arms, "workers_that_created": workers, "exact": (not_lost or 0) == trials}


LOCK = re.compile(r"waited_us=(\d+) held_us=(\d+)")


def lock_times(outs):
    waited, held = [], []
    for _, err in outs:
        for m in LOCK.finditer(err):
            waited.append(int(m.group(1)) / 1000.0)
            held.append(int(m.group(2)) / 1000.0)
    return waited, held


def parse(t):
    """A stored time (RFC 3339, UTC, milliseconds) as seconds."""
    import datetime
    return datetime.datetime.strptime(t.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "optx"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--trials", type=int, default=3000)
    ap.add_argument("--share-trials", type=int, default=80)
    args = ap.parse_args()
    optx = os.path.abspath(args.optx)
    if not os.path.isfile(optx):
        sys.exit(f"{optx} is missing: cargo build --release -p optx")
    keep = []

    print(f"# sharing: {args.share_trials} trials of a 0.1 s script ({os.cpu_count()} cores)")
    ratios = []
    for r in range(args.rounds):
        d1 = tempfile.TemporaryDirectory(); keep.append(d1)
        write(d1.name, "one", "sleep 0.1; echo f={x}", args.share_trials, 4)
        t1, o1 = run_workers(optx, d1.name, 1, join=False)
        d4 = tempfile.TemporaryDirectory(); keep.append(d4)
        write(d4.name, "four", "sleep 0.1; echo f={x}", args.share_trials, 1)
        t4, o4 = run_workers(optx, d4.name, 4)
        c4 = check(d4.name, "four", args.share_trials)
        bad = [e for code, e in o1 + o4 if code != 0]
        if bad or not c4["exact"]:
            sys.exit(f"a run failed: {bad[:1]} {c4}")
        print(f"round {r + 1}: 1 worker x parallelism 4: {t1:.2f} s; 4 workers x parallelism 1: {t4:.2f} s; "
              f"ratio {t4 / t1:.2f}; {c4['workers_that_created']} workers created trials")
        ratios.append(t4 / t1)
    med = statistics.median(ratios)
    print(f"median ratio 4x1 / 1x4: {med:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); "
          f"target within 15%: {'PASS' if med <= 1.15 else 'FAIL'}")

    print(f"# many workers: {args.workers} workers, {args.trials} instant trials, sobol")
    env = dict(os.environ, RUST_LOG="optx::store::lock=debug")
    d = tempfile.TemporaryDirectory(); keep.append(d)
    write(d.name, "many", "echo f=1", args.trials, 1)
    t, outs = run_workers(optx, d.name, args.workers, env=env)
    c = check(d.name, "many", args.trials)
    locked = sum(e.count("database is locked") for _, e in outs)
    failed = sum(1 for code, _ in outs if code != 0)
    rate = c["completed"] / t
    first, last = sqlite3.connect(os.path.join(d.name, ".optx", "many.db")).execute(
        "SELECT min(created_at), max(completed_at) FROM trials").fetchone()
    steady = (parse(last) - parse(first)) if first and last else float("nan")
    print(f"{c['completed']} trials in {t:.2f} s of wall time, the {args.workers} workers' start included: {rate:.0f} trials/s "
          f"({c['completed'] / steady:.0f} trials/s from the first trial created to the last ended, {steady:.2f} s)")
    print(f"workers failed: {failed}; "
          f"'database is locked': {locked}; unended trials: {c['unended']}; exact budget: {c['exact']}; "
          f"distinct arms: {c['distinct_arms']}; workers that created trials: {c['workers_that_created']}")
    print(f"target >= 300 trials/s, zero lock errors, zero stuck, exact: "
          f"{'PASS' if rate >= 300 and locked == 0 and c['unended'] == 0 and c['exact'] and failed == 0 else 'FAIL'}")
    waited, held = lock_times(outs)
    print(f"store lock, sobol, {len(held)} transactions: held median {pct(held, 50):.2f} ms, p99 {pct(held, 99):.2f} ms; "
          f"waited median {pct(waited, 50):.2f} ms, p99 {pct(waited, 99):.2f} ms; "
          f"target p99 held < 50 ms: {'PASS' if pct(held, 99) < 50 else 'FAIL'}")

    print("# the store lock with the GP: 4 workers, 150 trials, auto (5 initial, then Bayesian)")
    d = tempfile.TemporaryDirectory(); keep.append(d)
    write(d.name, "gp", "echo f={x}", 150, 1, method="auto")
    t, outs = run_workers(optx, d.name, 4, env=env)
    c = check(d.name, "gp", 150)
    waited, held = lock_times(outs)
    print(f"{c['completed']} trials in {t:.2f} s, exact budget: {c['exact']}; held median {pct(held, 50):.2f} ms, "
          f"p99 {pct(held, 99):.2f} ms; waited median {pct(waited, 50):.2f} ms, p99 {pct(waited, 99):.2f} ms")


if __name__ == "__main__":
    main()
