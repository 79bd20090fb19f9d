#!/usr/bin/env python3
"""Workers on a PostgreSQL store beside the same workers on SQLite (`optx run --join`).

For each worker count (default 16 and 128), interleaved in rounds, the same experiment
(trials of `sleep 0.5`, parallelism 1 per worker, 4 trials per worker) runs once on a
SQLite file and once on a throw-away PostgreSQL server (scripts/pg-server.sh): total
throughput, workers that failed, exact budget, and, from optx's own debug log
(`RUST_LOG=optx::store::lock=debug`), how long each transaction (the claim of new trials
among them) held the experiment's lock and waited for it. For PostgreSQL also the peak
number of optx connections, sampled from pg_stat_activity (target: at most one per
worker), and the target of a p99 held < 20 ms at 16 workers.

Usage: bench/server.py [path/to/optx] [--rounds N] [--workers 16,128] [--per-worker 4]
(bench/server.sh builds the release binary, starts the server, and calls this.)
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from workers import pct

EXPERIMENT = """[experiment]
name = "{name}"
seed = 1

[parameters]
x = {{ type = "float", bounds = [0.0, 1.0] }}
y = {{ type = "float", bounds = [0.0, 1.0] }}

[objective]
minimize = "f"

[runner]
command = ["sh", "-c", "sleep 0.5; echo f={{x}}"]

[orchestration]
max_trials = {trials}
parallelism = 1
initial_seconds_between_polls = 0.05
max_seconds_between_polls = 0.2
tolerated_trial_failure_rate = 0.0

[generation]
method = "sobol"
{storage}
"""

LOCK = re.compile(r"waited_us=(\d+) held_us=(\d+)(?: server_us=(\d+))?")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True)
    return out.stdout.strip()


def one(optx, n, trials, kind, url, name):
    d = tempfile.TemporaryDirectory()
    storage = f'\n[storage]\nurl = "{url}"\n' if kind == "postgresql" else ""
    with open(os.path.join(d.name, "experiment.toml"), "w") as f:
        f.write(EXPERIMENT.format(name=name, trials=trials, storage=storage))
    env = dict(os.environ, RUST_LOG="optx::store::lock=debug")
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            c = psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'optx'")
            if c.isdigit():
                peak[0] = max(peak[0], int(c))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    if kind == "postgresql":
        sampler.start()
    start = time.perf_counter()
    procs = [subprocess.Popen([optx, "run", "experiment.toml", "--join", "--quiet"], cwd=d.name,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(n)]
    outs = [(p.wait(), p.stderr.read().decode(errors="replace")) for p in procs]
    wall = time.perf_counter() - start
    done.set()
    if kind == "postgresql":
        sampler.join()
    store = f"{url}?experiment={name}" if kind == "postgresql" else os.path.join(d.name, ".optx", f"{name}.db")
    t = json.loads(subprocess.run([optx, "trials", store, "--format", "json"], capture_output=True, text=True,
                                  check=True).stdout)
    completed = [x for x in t if x["status"] == "COMPLETED"]
    waited, held, server = [], [], []
    for _, err in outs:
        for m in LOCK.finditer(err):
            waited.append(int(m.group(1)) / 1000.0)
            held.append(int(m.group(2)) / 1000.0)
            if m.group(3):
                server.append(int(m.group(3)) / 1000.0)
    failed = [e for c, e in outs if c != 0]
    return {
        "wall": wall, "rate": len(completed) / wall, "failed": len(failed), "first_error": failed[0][-300:] if failed else "",
        "exact": sum(1 for x in t if not x["lost"]) == trials and len(completed) == trials,
        "distinct": len({json.dumps(x["parameters"], sort_keys=True) for x in completed}) == len(completed),
        "unended": sum(1 for x in t if x["status"] in ("CANDIDATE", "STAGED", "RUNNING")),
        "held": held, "waited": waited, "server": server, "peak": peak[0],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "optx"))
    ap.add_argument("--url", default=os.environ.get("OPTX_BENCH_PG_URL"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", default="16,128")
    ap.add_argument("--per-worker", type=int, default=4)
    args = ap.parse_args()
    optx = os.path.abspath(args.optx)
    if not os.path.isfile(optx):
        sys.exit(f"{optx} is missing: cargo build --release -p optx")
    if not args.url:
        sys.exit("give the server's URL (--url or OPTX_BENCH_PG_URL); bench/server.sh starts one")
    counts = [int(x) for x in args.workers.split(",")]
    print(f"# {os.cpu_count()} cores; trials of `sleep 0.5`, {args.per_worker} per worker, parallelism 1 each; "
          f"{args.rounds} rounds, SQLite and PostgreSQL interleaved")
    results = {}
    for r in range(args.rounds):
        for n in counts:
            for kind in ("sqlite", "postgresql"):
                name = f"b{n}_{kind[:2]}_{r}_{os.getpid()}"
                res = one(optx, n, n * args.per_worker, kind, args.url, name)
                results.setdefault((n, kind), []).append(res)
                print(f"round {r + 1}, {n} workers, {kind}: {n * args.per_worker} trials in {res['wall']:.2f} s, "
                      f"{res['rate']:.1f} trials/s; failed workers {res['failed']}; exact {res['exact']}; "
                      f"distinct arms {res['distinct']}; unended {res['unended']}"
                      + (f"; peak optx connections {res['peak']}" if kind == "postgresql" else "")
                      + (f"\n  first error: {res['first_error']}" if res["failed"] else ""), flush=True)
    print("# summary (all rounds)")
    for n in counts:
        row = {}
        for kind in ("sqlite", "postgresql"):
            rs = results[(n, kind)]
            held = [h for x in rs for h in x["held"]]
            waited = [w for x in rs for w in x["waited"]]
            row[kind] = statistics.median(x["rate"] for x in rs)
            ok = all(x["exact"] and x["distinct"] and x["failed"] == 0 and x["unended"] == 0 for x in rs)
            extra = ""
            if kind == "postgresql":
                server = [h for x in rs for h in x["server"]]
                extra = (f"; of the time held, waiting for the server: {100 * sum(server) / max(sum(held), 1e-9):.0f}%"
                         f"; peak connections {max(x['peak'] for x in rs)} for {n} workers")
            print(f"{n:>4} workers, {kind:<10}: median {row[kind]:.1f} trials/s; {len(held)} transactions, lock held "
                  f"median {pct(held, 50):.2f} ms, p99 {pct(held, 99):.2f} ms; waited median {pct(waited, 50):.2f} ms, "
                  f"p99 {pct(waited, 99):.2f} ms; exact, no errors: {ok}{extra}")
            if kind == "postgresql" and n == 16:
                print(f"      target: claim transaction p99 < 20 ms at 16 workers: "
                      f"{'PASS' if pct(held, 99) < 20 else 'FAIL'}")
            if kind == "postgresql":
                print(f"      target: at most one connection per worker: "
                      f"{'PASS' if max(x['peak'] for x in rs) <= n else 'FAIL'}")
        print(f"      PostgreSQL / SQLite throughput at {n} workers: {row['postgresql'] / row['sqlite']:.2f}")


if __name__ == "__main__":
    main()
