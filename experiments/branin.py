#!/usr/bin/env python3
"""Branin (minimum 0.397887): reads its parameters from the environment optx sets and
reports Katib-style `name=value` pairs on stdout."""
import math
import os

x1 = float(os.environ["OPTX_PARAM_X1"])
x2 = float(os.environ["OPTX_PARAM_X2"])
a, b, c = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi
r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
value = a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s
print(f"trial {os.environ['OPTX_TRIAL_INDEX']}: branin={value:.10g}")
