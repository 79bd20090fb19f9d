#!/usr/bin/env python3
"""The HTML report and `optx status` on big stores (issue "What people see and type").

Builds two stores with optx itself: 1,000 and 10,000 trials, each with a learning curve of
100 points (10,000 x 100 = 1,000,000 observations), then measures, interleaved:
- `optx report` wall time and file size (targets at 10,000 trials: <= 3 s, <= 15 MB);
- the report's load in headless Chromium: `--dump-dom` of the report minus that of an
  empty page, to take the browser's own start out (target <= 2 s);
- `optx status` on the 1,000,000-observation store (target < 100 ms).
Medians of --repeat runs.

Usage: bench/report.py path/to/optx path/to/chromium [--repeat N] [--sizes 1000,10000]
(bench/report.sh builds the release binary, finds or installs Chromium, and calls this.)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

EXPERIMENT = """[experiment]
name = "big"
seed = 1

[parameters]
x = {{ type = "float", bounds = [0.0, 1.0] }}
y = {{ type = "float", bounds = [0.0, 1.0] }}
z = {{ type = "float", bounds = [1e-4, 1.0], scaling = "log" }}
k = {{ type = "choice", values = ["a", "b", "c"] }}

[objective]
minimize = "f"

[runner]
command = 'i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo "step=$i f={{x}}e-$i"; done; echo "f={{y}}"'
shell = true

[orchestration]
max_trials = {n}
parallelism = 8
initial_seconds_between_polls = 0

[generation]
method = "sobol"
"""


def timed(cmd, **kw):
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    return time.perf_counter() - start, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("optx")
    ap.add_argument("chromium")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000")
    a = ap.parse_args()
    optx = os.path.abspath(a.optx)
    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as top:
        dirs = {}
        for n in sizes:
            d = os.path.join(top, str(n))
            os.makedirs(d)
            open(os.path.join(d, "experiment.toml"), "w").write(EXPERIMENT.format(n=n))
            t, _ = timed([optx, "run", "experiment.toml", "--quiet"], cwd=d)
            print(f"# built a store of {n} trials x 100 curve points in {t:.0f} s", flush=True)
            dirs[n] = d
        empty = os.path.join(top, "empty.html")
        open(empty, "w").write("<!DOCTYPE html><html><body></body></html>")
        browser = [a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
        res = {n: {"report": [], "load": [], "status": []} for n in sizes}
        size = {}
        for _ in range(a.repeat):
            for n in sizes:
                d = dirs[n]
                t, _ = timed([optx, "report", "experiment.toml", "-o", "report.html"], cwd=d)
                res[n]["report"].append(t)
                size[n] = os.path.getsize(os.path.join(d, "report.html"))
                t_page, _ = timed(browser + ["file://" + os.path.join(d, "report.html")])
                t_empty, _ = timed(browser + ["file://" + empty])
                res[n]["load"].append(t_page - t_empty)
                t, _ = timed([optx, "status", "experiment.toml"], cwd=d)
                res[n]["status"].append(t)
        print(f"# medians of {a.repeat} interleaved runs, {os.cpu_count()} cores")
        for n in sizes:
            r = res[n]
            rep, load, st = (statistics.median(r[k]) for k in ("report", "load", "status"))
            line = (f"{n} trials ({n * 100} curve points): report written in {rep:.2f} s, {size[n] / 1e6:.1f} MB; "
                    f"loads in Chromium in {load:.2f} s (beyond an empty page); optx status {st * 1000:.0f} ms")
            if n >= 10000:
                ok = rep <= 3 and size[n] <= 15e6 and load <= 2 and st < 0.1
                line += f"; {'PASS' if ok else 'FAIL'} (<= 3 s, <= 15 MB, <= 2 s, < 100 ms)"
            print(line)
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            ratio = statistics.median(res[hi]["report"]) / statistics.median(res[lo]["report"])
            print(f"report time {hi} / {lo} trials: {ratio:.1f}x for {hi // lo}x the trials")


if __name__ == "__main__":
    main()
