#!/usr/bin/env python3
"""Orchestration throughput with a plugin runner (issue: >= 5,000 trials/s).

The hartmann6 plugin with delay 0, `initial_seconds_between_polls = 0`, sobol,
parallelism 4, 20,000 trials; every transition committed to SQLite before optx acts on it.
Each run is a fresh experiment in a new directory under --workdir; the figure is the
median of --runs runs (this host's steal time makes single runs noisy). The runs' trial
dirs are deleted only after the last run: ext4 allocates inodes slowly for a while after
mass deletions, which would slow every run after the first.

With --baseline OTHER_OPTX, the runs of the two binaries alternate (baseline first) and
the ratio of their medians is printed: compare a change side by side on this noisy host.

Usage: bench/plugin.py path/to/optx path/to/liboptx_hartmann6.so [--trials N] [--runs N] [--workdir DIR] [--baseline OPTX]
(bench/plugin.sh builds the release binaries and calls this.)
"""
import argparse
import os
import statistics
import tempfile
import time

from orchestration import run_optx

EXPERIMENT = """[experiment]
name = "plugin_bench"
seed = 1

[parameters]
x1 = {{ type = "float", bounds = [0.0, 1.0] }}
x2 = {{ type = "float", bounds = [0.0, 1.0] }}
x3 = {{ type = "float", bounds = [0.0, 1.0] }}
x4 = {{ type = "float", bounds = [0.0, 1.0] }}
x5 = {{ type = "float", bounds = [0.0, 1.0] }}
x6 = {{ type = "float", bounds = [0.0, 1.0] }}

[objective]
minimize = "hartmann6"

[runner]
kind = "plugin"
library = "{lib}"
name = "hartmann6"
config = {{ delay_seconds = 0 }}

[metrics.hartmann6]
plugin = {{ library = "{lib}", name = "hartmann6" }}

[generation]
method = "sobol"

[orchestration]
max_trials = {trials}
parallelism = 4
initial_seconds_between_polls = 0
"""


def run(optx, lib, trials, workdir):
    elapsed, rss = run_optx(optx, trials, workdir, EXPERIMENT.format(lib=lib, trials=trials))
    return trials / elapsed, rss


def fs_floor(workdir, trials):
    """The filesystem work of the same trials alone, 4 threads: a dir per trial and the
    plugin's one file in it. On this host's ext4 it bounds what any orchestrator can do."""
    from concurrent.futures import ThreadPoolExecutor
    top = tempfile.mkdtemp(dir=workdir)

    def one(i):
        p = os.path.join(top, str(i))
        os.mkdir(p)
        with open(os.path.join(p, "hartmann6.json"), "w") as f:
            f.write('{"hartmann6": -1.0, "l2norm": 1.0}')

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, range(trials)))
    return trials / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx")
    ap.add_argument("lib")
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where the stores and trial dirs go (default: a temp dir)")
    ap.add_argument("--baseline", default=None, help="another optx binary, run alternately with this one")
    a = ap.parse_args()
    optx, lib = os.path.abspath(a.optx), os.path.abspath(a.lib)
    rates, rss, base = [], [], []
    with tempfile.TemporaryDirectory(dir=a.workdir) as top:
        for i in range(a.runs):
            if a.baseline:
                d = os.path.join(top, f"b{i}")
                os.mkdir(d)
                r, _ = run(os.path.abspath(a.baseline), lib, a.trials, d)
                base.append(r)
                print(f"run {i + 1}: baseline {r:.0f} trials/s", flush=True)
            d = os.path.join(top, str(i))
            os.mkdir(d)
            r, m = run(optx, lib, a.trials, d)
            rates.append(r)
            rss.append(m)
            print(f"run {i + 1}: {r:.0f} trials/s, peak RSS {m:.1f} MB", flush=True)
        floor = fs_floor(top, a.trials)
    if base:
        b = statistics.median(base)
        print(f"baseline median {b:.0f} trials/s; this one / baseline = {statistics.median(rates) / b:.3f}")
    med = statistics.median(rates)
    print(f"filesystem alone, same place: {a.trials} x (mkdir + write one file), 4 threads: {floor:.0f} per s")
    print(f"median of {a.runs}: {med:.0f} trials/s over {a.trials} trials "
          f"(min {min(rates):.0f}, max {max(rates):.0f}); peak RSS up to {max(rss):.1f} MB")
    print(f"target: >= 5000 trials/s: {'PASS' if med >= 5000 else 'FAIL'}")


if __name__ == "__main__":
    main()
