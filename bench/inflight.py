#!/usr/bin/env python3
"""Trials in flight at once through the job-queue plugin (a remote-queue runner).

N trials at parallelism N (default 10,000): every trial is submitted to the plugin's
queue and stays in flight until the queue completes it (`completion_probability` per
poll). Samples optx's threads and resident memory (/proc) every 50 ms while it runs and
reports the peaks, the wall time, and whether every trial completed.
Targets (issue "Trials on a cluster"): <= 64 threads, peak RSS <= 300 MB, all completed.

Usage: bench/inflight.py path/to/optx path/to/liboptx_job_queue.so [--trials N] [--probability P]
(bench/inflight.sh builds the release binaries and calls this.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

EXPERIMENT = """[experiment]
name = "inflight"
seed = 1

[parameters]
x1 = {{ type = "float", bounds = [-5.0, 10.0] }}
x2 = {{ type = "float", bounds = [0.0, 15.0] }}

[objective]
minimize = "branin"

[runner]
kind = "plugin"
library = "{lib}"
name = "job-queue"
config = {{ seed = 1, completion_probability = {p}, max_jobs = {n} }}

[metrics.branin]
plugin = {{ library = "{lib}", name = "branin" }}

[orchestration]
max_trials = {n}
parallelism = {n}
initial_seconds_between_polls = 0.2
seconds_between_polls_backoff_factor = 1.5
max_seconds_between_polls = 1
tolerated_trial_failure_rate = 0.0

[generation]
method = "sobol"
"""


def status(pid):
    """(threads, VmRSS kB, VmHWM kB) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kb = lambda k: int(fields.get(k, "0 kB").split()[0])
        return int(fields["Threads"]), kb("VmRSS"), kb("VmHWM")
    except (OSError, KeyError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx")
    ap.add_argument("lib")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--probability", type=float, default=0.3)
    args = ap.parse_args()
    optx, lib = os.path.abspath(args.optx), os.path.abspath(args.lib)
    for p in (optx, lib):
        if not os.path.isfile(p):
            sys.exit(f"{p} is missing: cargo build --release --workspace")
    d = tempfile.TemporaryDirectory()
    with open(os.path.join(d.name, "experiment.toml"), "w") as f:
        f.write(EXPERIMENT.format(lib=lib, n=args.trials, p=args.probability))
    start = time.perf_counter()
    proc = subprocess.Popen([optx, "run", "experiment.toml", "--quiet"], cwd=d.name,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    threads = rss = hwm = 0
    while proc.poll() is None:
        s = status(proc.pid)
        if s:
            threads, rss, hwm = max(threads, s[0]), max(rss, s[1]), max(hwm, s[2])
        time.sleep(0.05)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    out = subprocess.run([optx, "trials", os.path.join(d.name, ".optx", "inflight.db"), "--format", "json"],
                         capture_output=True, text=True)
    trials = json.loads(out.stdout) if out.returncode == 0 else []
    completed = sum(1 for t in trials if t["status"] == "COMPLETED")
    peak_mb = max(rss, hwm) / 1024
    print(f"# {args.trials} trials in flight at once (parallelism {args.trials}), job-queue plugin, "
          f"completion probability {args.probability} per poll, {os.cpu_count()} cores")
    print(f"exit {proc.returncode}; {completed} of {args.trials} completed in {wall:.1f} s; "
          f"peak threads {threads}; peak RSS {peak_mb:.0f} MB")
    if proc.returncode != 0:
        print(f"stderr: {err[-500:]}")
    ok = proc.returncode == 0 and completed == args.trials and threads <= 64 and peak_mb <= 300
    print(f"target <= 64 threads, <= 300 MB, all completed: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
