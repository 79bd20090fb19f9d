#!/usr/bin/env python3
"""Orchestration overhead and memory of optx, measured beside a plain loop.

1. throughput: 2000 trials of `sh -c "echo f=1"` (minimize f), parallelism 2, sobol,
   every transition committed to SQLite, against a plain loop that spawns the same 2000
   commands two at a time (xargs -P 2) in the same run;
2. memory: peak RSS of optx during a 10,000-trial sobol run.

Usage: bench/orchestration.py [path/to/optx] [--trials N] [--rss-trials N] [--compare OTHER_OPTX]
(bench/run.sh builds the release binary and calls this.) With --compare, every round also
runs OTHER_OPTX (an earlier build, say) on the same trials, interleaved, and the ratio of
the two is printed beside the rates.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

EXPERIMENT = """[experiment]
name = "overhead"
seed = 1

[parameters]
x = {{ type = "float", bounds = [0.0, 1.0] }}
y = {{ type = "float", bounds = [0.0, 1.0] }}

[objective]
minimize = "f"

[runner]
command = ["sh", "-c", "echo f=1"]

[orchestration]
max_trials = {trials}
parallelism = 2
initial_seconds_between_polls = 0
tolerated_trial_failure_rate = 0.0

[generation]
method = "sobol"
"""


def run_optx(optx, trials, workdir, text=None):
    """Run the experiment `text` (default: this benchmark's) in `workdir` to its end and
    check that every trial completed. Returns the wall time and peak RSS (MB)."""
    with open(os.path.join(workdir, "experiment.toml"), "w") as f:
        f.write(text if text is not None else EXPERIMENT.format(trials=trials))
    start = time.perf_counter()
    proc = subprocess.Popen([optx, "run", "experiment.toml", "--quiet"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"optx failed ({status}): {proc.stderr.read().decode()}")
    out = subprocess.run([optx, "status", "experiment.toml"], cwd=workdir, capture_output=True, text=True)
    if f"{trials} of {trials} trials: {trials} completed" not in out.stdout:
        sys.exit(f"not every trial completed:\n{out.stdout}{out.stderr}")
    # ru_maxrss of wait4 is the peak of optx itself or of a descendant it waited for
    # (its shepherd, the trials), in KiB on Linux.
    return elapsed, usage.ru_maxrss / 1024.0


def run_plain(trials):
    start = time.perf_counter()
    subprocess.run(f"seq {trials} | xargs -P 2 -I{{}} sh -c 'echo f=1' > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


def main():
    # Trial dirs are kept until the end (as `keep_trial_dirs = "all"` keeps them in real
    # runs): deleting thousands of files slows down the creation of new ones on ext4 for
    # a while, which would measure the benchmark's own clean-up.
    keep = []

    ap = argparse.ArgumentParser()
    ap.add_argument("optx", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "optx"))
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--rss-trials", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where the experiments go (default: the system's temp dir)")
    ap.add_argument("--compare", default=None, help="another optx binary to run in every round, interleaved")
    args = ap.parse_args()
    optx = os.path.abspath(args.optx)
    if not os.path.isfile(optx):
        sys.exit(f"{optx} is missing: cargo build --release -p optx")

    fs = subprocess.run(["df", "-T", args.workdir or tempfile.gettempdir()], capture_output=True, text=True).stdout.split()
    print(f"# optx orchestration overhead ({os.cpu_count()} cores, trial dirs on {fs[-6] if len(fs) > 6 else '?'})")
    print(f"{'run':<46} {'trials':>7} {'seconds':>8} {'trials/s':>9}")
    other = os.path.abspath(args.compare) if args.compare else None
    optx_rates, plain_rates, ratios, other_rates, vs_other = [], [], [], [], []
    for r in range(args.repeat):
        # Interleaved rounds: the host's noise hits every side of a round alike.
        plain = run_plain(args.trials)
        d = tempfile.TemporaryDirectory(dir=args.workdir)
        keep.append(d)
        t, _ = run_optx(optx, args.trials, d.name)
        print(f"{'plain loop (xargs -P 2 sh -c ...), run ' + str(r + 1):<46} {args.trials:>7} {plain:>8.2f} {args.trials / plain:>9.0f}")
        print(f"{'optx run, parallelism 2, sobol, run ' + str(r + 1):<46} {args.trials:>7} {t:>8.2f} {args.trials / t:>9.0f}")
        if other:
            d2 = tempfile.TemporaryDirectory(dir=args.workdir)
            keep.append(d2)
            t2, _ = run_optx(other, args.trials, d2.name)
            print(f"{'--compare binary, run ' + str(r + 1):<46} {args.trials:>7} {t2:>8.2f} {args.trials / t2:>9.0f}")
            other_rates.append(args.trials / t2)
            vs_other.append(t2 / t)
        optx_rates.append(args.trials / t)
        plain_rates.append(args.trials / plain)
        ratios.append(plain / t)
    med = statistics.median
    optx_rate, ratio = med(optx_rates), med(ratios)
    print(f"median of {args.repeat}: optx {optx_rate:.0f} trials/s, plain loop {med(plain_rates):.0f} trials/s, "
          f"optx/plain {ratio:.2f} (pairs: {', '.join(f'{x:.2f}' for x in ratios)})")
    if other:
        print(f"median of {args.repeat}: --compare binary {med(other_rates):.0f} trials/s; optx/compare {med(vs_other):.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in vs_other)})")
    print(f"target: >= 400 trials/s: {'PASS' if optx_rate >= 400 else 'FAIL'}; "
          f">= 0.5 of the plain loop: {'PASS' if ratio >= 0.5 else 'FAIL'}")

    d = tempfile.TemporaryDirectory(dir=args.workdir)
    keep.append(d)
    t, rss = run_optx(optx, args.rss_trials, d.name)
    db = os.path.getsize(os.path.join(d.name, ".optx", "overhead.db")) / 1e6
    print(f"# memory: {args.rss_trials} trials in {t:.1f} s ({args.rss_trials / t:.0f} trials/s), store {db:.1f} MB")
    print(f"peak RSS {rss:.1f} MB; target < 50 MB: {'PASS' if rss < 50 else 'FAIL'}")


if __name__ == "__main__":
    main()
