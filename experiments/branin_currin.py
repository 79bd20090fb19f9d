#!/usr/bin/env python3
"""Branin-Currin, two objectives to minimize over the unit square (BoTorch's test problem):
reads its parameters from the environment optx sets, reports `branin=.. currin=..`."""
import math
import os

u = float(os.environ["OPTX_PARAM_U"])
v = max(float(os.environ["OPTX_PARAM_V"]), 1e-9)
x1, x2 = 15 * u - 5, 15 * v
branin = (x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2 \
    + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10
currin = (1 - math.exp(-1 / (2 * v))) * (2300 * u ** 3 + 1900 * u ** 2 + 2092 * u + 60) \
    / (100 * u ** 3 + 500 * u ** 2 + 4 * u + 20)
print(f"branin={branin:.10g} currin={currin:.10g}")
