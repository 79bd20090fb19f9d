#!/usr/bin/env python3
"""Hartmann6: the 6-dimensional test function of Ax's tutorials (minimum -3.32237).

An ordinary script: it takes its parameters as command-line flags and prints its
metrics as one JSON line, which is all optx needs. It also prints a few progress lines
(a learning curve with `step`), as a training script would.
"""
import argparse
import json
import math

ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
P = [
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
]


def hartmann6(x):
    total = 0.0
    for i in range(4):
        inner = sum(A[i][j] * (x[j] - P[i][j] * 1e-4) ** 2 for j in range(6))
        total -= ALPHA[i] * math.exp(-inner)
    return total


def main():
    parser = argparse.ArgumentParser()
    for i in range(1, 7):
        parser.add_argument(f"--x{i}", type=float, required=True)
    args = parser.parse_args()
    x = [getattr(args, f"x{i}") for i in range(1, 7)]
    value = hartmann6(x)
    for step in range(1, 4):
        # A learning curve that converges to the final value.
        print(json.dumps({"step": step, "hartmann6": value * (1 - 0.5 ** step)}))
    print(json.dumps({"hartmann6": value, "l2norm": math.sqrt(sum(v * v for v in x))}))


if __name__ == "__main__":
    main()
