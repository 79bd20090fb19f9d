#!/usr/bin/env python3
"""The slurm runner on the local Slurm (issue "Trials on a cluster").

1. overhead: 20 one-second jobs at parallelism 2 through optx, against Slurm alone with
   the same 20 jobs, two ways:
   - submitted as they are through optx: one job per free slot, each submitted when the
     last one of its slot has left squeue, which two threads watch every 20 ms (Slurm's
     own cost of a job submitted when a slot frees: scheduling it, starting it, ending it);
   - as one job array throttled to 2 at a time (`--array=0-19%2`), all queued at once:
     Slurm starts each task in the pass that ends the one before, which no orchestrator
     that submits a trial when a slot frees can do.
   Runs alternate (--runs of each); target: optx's median within 15% of Slurm's.
2. notice: 6 jobs of 5 s at parallelism 2 with max_seconds_between_polls = 2: the time
   from each job's end (the job writes it last) to its completion in optx's store;
   target: at most 2 s (plus the store's clock resolution).
3. calls: 1,000 jobs in flight at once (parallelism 1000, jobs that sleep; most of them
   pending on a 2-CPU node): every Slurm command optx runs is logged by a shim on PATH;
   reported: calls per poll round (max; a round starts with squeue) and status calls per
   second (mean) over --watch seconds after the last submission.

Needs SLURM_CONF (scripts/slurm-local.sh up DIR prints it).
Usage: bench/slurm.py path/to/optx [--runs N] [--jobs N] [--watch S]
(bench/slurm.sh builds the release binary, starts a local Slurm and calls this.)
"""
import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

X = 'x = { type = "float", bounds = [0.0, 1.0] }'

TRIAL = """import json, os, sys, time
time.sleep(float(sys.argv[2]))
json.dump({"f": float(sys.argv[1]) ** 2}, open(os.environ["OPTX_RESULT_FILE"], "w"))
open(os.path.join(os.environ["OPTX_TRIAL_DIR"], "ended_at"), "w").write(repr(time.time()))
"""


def experiment(name, trials, parallelism, sleep, polls):
    return f"""[experiment]
name = "{name}"
seed = 1

[parameters]
{X}

[objective]
minimize = "f"

[runner]
kind = "slurm"
command = ["python3", "trial.py", "{{x}}", "{sleep}"]

[orchestration]
max_trials = {trials}
parallelism = {parallelism}
{polls}

[generation]
method = "sobol"
"""


def squeue_empty(name):
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout
    return not out.strip()


def slurm_alone(top, n, par, sleep):
    d = tempfile.mkdtemp(dir=top)
    name = f"alone-{os.path.basename(d)}"
    start = time.perf_counter()
    subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}%{par}", f"--job-name={name}",
                    f"--output={d}/%a.out", f"--wrap=sleep {sleep}"], check=True, capture_output=True)
    while not squeue_empty(name):
        time.sleep(0.05)
    return time.perf_counter() - start


def slurm_fresh(top, n, par, sleep):
    """The same jobs through Slurm alone, one per free slot, each submitted as soon as the
    previous job of its slot has left squeue (watched every 20 ms)."""
    import threading
    d = tempfile.mkdtemp(dir=top)

    def slot(k):
        for i in range(k, n, par):
            jid = subprocess.run(["sbatch", "--parsable", f"--output={d}/{i}.out", f"--wrap=sleep {sleep}"],
                                 check=True, capture_output=True, text=True).stdout.strip().split(";")[0]
            while subprocess.run(["squeue", "-h", "-j", jid, "-o", "%i"], capture_output=True, text=True).stdout.strip():
                time.sleep(0.02)

    start = time.perf_counter()
    threads = [threading.Thread(target=slot, args=(k,)) for k in range(par)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run_optx(optx, top, text, env=None, args=(), wait=True):
    d = tempfile.mkdtemp(dir=top)
    with open(os.path.join(d, "experiment.toml"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "trial.py"), "w") as f:
        f.write(TRIAL)
    start = time.perf_counter()
    p = subprocess.Popen([optx, "run", "experiment.toml", "--quiet", *args], cwd=d, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait:
        return d, p
    _, err = p.communicate()
    if p.returncode != 0:
        sys.exit(f"optx failed: {err.decode()[-2000:]}")
    return d, time.perf_counter() - start


def overhead(optx, top, runs):
    polls = "initial_seconds_between_polls = 0.1\nseconds_between_polls_backoff_factor = 1.2\nmax_seconds_between_polls = 2"
    text = experiment("overhead", 20, 2, 1, polls)
    mine, fresh, array = [], [], []
    for i in range(runs):
        fresh.append(slurm_fresh(top, 20, 2, 1))
        array.append(slurm_alone(top, 20, 2, 1))
        mine.append(run_optx(optx, top, text)[1])
        print(f"run {i + 1}: Slurm alone {fresh[-1]:.2f} s (a job per free slot), {array[-1]:.2f} s (one array); "
              f"optx {mine[-1]:.2f} s", flush=True)
    f, a, m = statistics.median(fresh), statistics.median(array), statistics.median(mine)
    print(f"20 one-second jobs at parallelism 2 (medians of {runs}): optx {m:.2f} s; Slurm alone {f:.2f} s "
          f"submitting a job per free slot (optx / Slurm = {m / f:.3f}, target <= 1.15: {'PASS' if m / f <= 1.15 else 'FAIL'}), "
          f"{a:.2f} s as one array (optx / array = {m / a:.3f})")


def notice(optx, top):
    polls = "initial_seconds_between_polls = 1\nseconds_between_polls_backoff_factor = 1.5\nmax_seconds_between_polls = 2"
    d, _ = run_optx(optx, top, experiment("notice", 6, 2, 5, polls))
    db = sqlite3.connect(os.path.join(d, ".optx", "notice.db"))
    lags = []
    for idx, completed in db.execute("SELECT idx, completed_at FROM trials ORDER BY idx"):
        ended = float(open(os.path.join(d, ".optx", "notice.trials", str(idx), "ended_at")).read())
        at = datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp()
        lags.append(at - ended)
    print(f"finished job noticed after (s), max_seconds_between_polls = 2: "
          + ", ".join(f"{x:.2f}" for x in lags)
          + f"; max {max(lags):.2f}; target <= 2 s: {'PASS' if max(lags) <= 2.0 else 'FAIL'}")


SHIM = """#!/bin/sh
echo "$(basename "$0") $(date +%s.%N)" >> {log}
exec {real} "$@"
"""


def calls(optx, top, jobs, watch):
    shims = tempfile.mkdtemp(dir=top)
    log = os.path.join(shims, "calls.log")
    for cmd in ("sbatch", "squeue", "sacct", "scontrol", "scancel"):
        real = subprocess.run(["sh", "-c", f"command -v {cmd}"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(shims, cmd), "w") as f:
            f.write(SHIM.format(log=log, real=real))
        os.chmod(os.path.join(shims, cmd), 0o755)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}")
    polls = "initial_seconds_between_polls = 1\nmax_seconds_between_polls = 2"
    text = experiment("calls", jobs, jobs, 3600, polls)
    d, p = run_optx(optx, top, text, env=env, wait=False)
    db = os.path.join(d, ".optx", "calls.db")
    start = time.perf_counter()
    while True:
        time.sleep(1)
        try:
            n = sqlite3.connect(db).execute("SELECT count(*) FROM trials WHERE status = 'RUNNING'").fetchone()[0]
        except sqlite3.Error:
            n = 0
        if n >= jobs or p.poll() is not None:
            break
    submitted = time.perf_counter() - start
    t0 = time.time()
    time.sleep(watch)
    p.kill()
    p.wait()
    subprocess.run(["scancel", "-n", "optx", "--quiet"], capture_output=True)
    names = subprocess.run(["squeue", "-h", "-o", "%i", "-u", str(os.getuid())], capture_output=True, text=True).stdout.split()
    if names:
        subprocess.run(["scancel", *names], capture_output=True)
    rows = [line.split() for line in open(log)]
    status = [(c, float(t)) for c, t in rows if c in ("squeue", "sacct", "scontrol") and float(t) >= t0]
    rounds, cur = [], 0
    for c, _ in status:
        if c == "squeue":
            if cur:
                rounds.append(cur)
            cur = 1
        else:
            cur += 1
    if cur:
        rounds.append(cur)
    print(f"{jobs} jobs in flight (submitted in {submitted:.1f} s, {sum(1 for c, _ in rows if c == 'sbatch')} sbatch calls); "
          f"over the next {watch} s: {len(rounds)} poll rounds, scheduler calls per round max {max(rounds) if rounds else 0}, "
          f"mean {len(status) / watch:.2f} status calls per second; target <= 2 per round: "
          f"{'PASS' if rounds and max(rounds) <= 2 else 'FAIL'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--watch", type=int, default=30)
    a = ap.parse_args()
    if not os.environ.get("SLURM_CONF"):
        sys.exit("SLURM_CONF is not set: scripts/slurm-local.sh up DIR starts a local Slurm and prints it")
    optx = os.path.abspath(a.optx)
    with tempfile.TemporaryDirectory() as top:
        overhead(optx, top, a.runs)
        notice(optx, top)
        calls(optx, top, a.jobs, a.watch)


if __name__ == "__main__":
    main()
