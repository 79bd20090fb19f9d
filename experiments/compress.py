#!/usr/bin/env python3
"""A real trade-off: how fast and how well xz (LZMA2, Python's own lzma module) compresses
real text, Python's standard library sources of the email, json and http packages
(~600 kB). Reports `seconds=... ratio=...`: the time to compress (the best of 3 runs), and
the size before over the size after."""
import argparse
import glob
import lzma
import os
import sysconfig
import time

ap = argparse.ArgumentParser()
ap.add_argument("--preset", type=int, required=True)
ap.add_argument("--extreme", choices=["true", "false"], required=True)
ap.add_argument("--dict-log2", type=int, required=True)
ap.add_argument("--mf", required=True)
ap.add_argument("--nice-len", type=int, required=True)
ap.add_argument("--lc", type=int, required=True)
a = ap.parse_args()

lib = sysconfig.get_paths()["stdlib"]
files = sorted(f for pkg in ("email", "json", "http") for f in glob.glob(os.path.join(lib, pkg, "*.py")))
data = b"".join(open(f, "rb").read() for f in files)

preset = a.preset | (lzma.PRESET_EXTREME if a.extreme == "true" else 0)
mf = {"hc3": lzma.MF_HC3, "hc4": lzma.MF_HC4, "bt2": lzma.MF_BT2, "bt3": lzma.MF_BT3, "bt4": lzma.MF_BT4}[a.mf]
filters = [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": 1 << a.dict_log2, "mf": mf,
            "nice_len": a.nice_len, "lc": a.lc, "lp": 0}]
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    out = lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)
    best = min(best, time.perf_counter() - start)
assert lzma.decompress(out) == data
print(f"{len(files)} files, {len(data)} bytes -> {len(out)} bytes")
print(f"seconds={best:.6f} ratio={len(data) / len(out):.6f}")
