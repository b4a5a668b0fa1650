#!/usr/bin/env python3
"""Reference vectors for the frequentist A/B statistics (domain/src/stats/special.rs and
frequentist.rs).

Run from the repository root:

    python3 scripts/stats/frequentist_vectors.py

It writes domain/src/stats/vectors/frequentist.json, which the Rust tests load with
include_str!. Made with Python 3.11.7, mpmath 1.3.0 (and scipy 1.17.1 only for the starting
point of the quantile's Newton iteration); every reference value is computed with mpmath at
mp.dps = 50 from the exact f64 inputs (each input is rounded to an f64 first and that f64 is
taken as exact), then rounded once to the nearest f64. The output is deterministic.

Conventions, as in the Rust code (B is the variant, A the control, differences are B - A):
- z_L = -quantile((1 - confidence) / 2), the exact normal quantile at the confidence;
- z-test: pooled, two-sided, no continuity correction; null when the pooled rate is 0 or 1;
- difference: unpooled Wald interval; lift: p_B/p_A - 1 with the first-order delta-method
  interval, null when p_A = 0; Wilson: no continuity correction;
- sample size: Fleiss without continuity correction, per variant = ceil(n), p2 = p1(1 + mde);
- SRM: Pearson chi-square against the normalised weights, df = k - 1, p = Q(df/2, chi2/2).
"""

import json
import os

import mpmath
from mpmath import mp, mpf

import scipy
import scipy.special

mp.dps = 50

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "domain", "src",
                   "stats", "vectors", "frequentist.json")


def f(x):
    """An mpf rounded to the nearest f64 (JSON number, shortest round-trip repr)."""
    return float(x)


def ncdf(x):
    return mpmath.ncdf(x)


def nsf(x):
    return mpmath.erfc(x / mpmath.sqrt(2)) / 2


def quantile(p):
    """Exact normal quantile of an mpf p in (0, 1): Newton on the smaller tail, from scipy."""
    p = mpf(p)
    if p > mpf(1) / 2:
        return -quantile(1 - p)
    if p == mpf(1) / 2:
        return mpf(0)
    x = mpf(float(scipy.special.ndtri(float(p))))
    for _ in range(100):
        step = (ncdf(x) - p) / mpmath.npdf(x)
        x -= step
        if abs(step) < mpf(10) ** (-45) * max(1, abs(x)):
            break
    return x


def z_level(confidence):
    return -quantile((1 - mpf(confidence)) / 2)


def gamma_q(a, x):
    return mpmath.gammainc(mpf(a), mpf(x), mpmath.inf, regularized=True)


# ---------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------

def norm_rows():
    xs = set()
    for i in range(-380, 381, 5):           # -38 .. 38 by 0.5
        xs.add(i / 10)
    for x in [0.0, 1e-300, 1e-20, 1e-8, 0.1, 0.3, 0.46875 * 2 ** 0.5, 0.6629, 0.7, 1.0,
              1.2345678901234567, 1.6448536269514722, 1.959963984540054, 2.5758293035489004,
              3.2905267314918945, 4 * 2 ** 0.5, 5.656854249492381, 5.7, 6.0, 8.3, 10.1,
              12.75, 20.0001, 26.5, 30.3, 37.0, 37.5, 38.0]:
        xs.add(x)
        xs.add(-x)
    return [[x, f(ncdf(mpf(x))), f(nsf(mpf(x)))] for x in sorted(xs)]


def quantile_rows():
    ps = set()
    for e in range(-300, 0, 7):
        ps.add(float(mpf(10) ** e))
    for e in [-300, -250, -200, -100, -50, -20, -16, -12, -10, -8, -6, -4, -3, -2, -1]:
        for m in [1.0, 2.5, 5.0]:
            ps.add(m * 10.0 ** e)
    for p in [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.0749, 0.0751, 0.1, 0.2,
              0.25, 0.3, 0.4, 0.45, 0.49, 0.5, 0.51, 0.6, 0.7, 0.8, 0.9, 0.9249, 0.925,
              0.9251, 0.95, 0.975, 0.99, 0.995, 0.999, 0.9995, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12,
              1 - 1e-15, 1 - 1e-16, 1 - 2 ** -53]:
        ps.add(p)
    ps = sorted(p for p in ps if 0 < p < 1)
    return [[p, f(quantile(mpf(p)))] for p in ps]


def ln_gamma_rows():
    xs = [1e-300, 1e-100, 1e-20, 1e-8, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0,
          1.01, 1.1, 1.25, 1.4616321449683622, 1.5, 1.75, 1.9, 1.99, 2.0, 2.01, 2.5, 3.0,
          3.5, 4.0, 5.5, 7.25, 9.5, 9.999999, 10.0, 10.5, 12.0, 15.0, 20.5, 25.0, 30.0, 50.0,
          50.5, 99.5, 100.0, 171.5, 1000.0, 1234.5, 1e4, 1e5, 1e6, 1e8, 1e10, 1e15, 1e20,
          1e100, 1e300]
    return [[x, f(mpmath.loggamma(mpf(x)))] for x in xs]


def gamma_q_rows():
    rows = []
    alist = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.7, 5.0, 10.0, 12.5, 25.0, 49.5, 50.0, 0.1]
    for a in alist:
        xs = {1e-10, 1e-3, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 400.0,
              700.0, 750.0, 1000.0, 1e4, 1e8}
        for d in [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0]:
            if a + d > 0:
                xs.add(a + d)
        for k in [1.0, 2.0, 4.0, 8.0]:
            xs.add(a + k * a ** 0.5)
            if a - k * a ** 0.5 > 0:
                xs.add(a - k * a ** 0.5)
        for x in sorted(xs):
            rows.append([a, x, f(gamma_q(a, x))])
    return rows


# ---------------------------------------------------------------------------------------
# Composite quantities
# ---------------------------------------------------------------------------------------

def wilson(c, n, confidence):
    """(p + z²/2n ∓ z√(p(1-p)/n + z²/4n²)) / (1 + z²/n), written as
    (2c + z² ∓ z√(z² + 4c(n-c)/n)) / (2(n + z²)) so that c = 0 gives exactly 0 and c = n
    exactly 1."""
    z = z_level(confidence)
    c, n = mpf(c), mpf(n)
    z2 = z * z
    root = z * mpmath.sqrt(z2 + 4 * c * (n - c) / n)
    return (2 * c + z2 - root) / (2 * (n + z2)), (2 * c + z2 + root) / (2 * (n + z2))


def compare(a, b, confidence):
    (ca, na), (cb, nb) = a, b
    out = {"a": [ca, na], "b": [cb, nb], "confidence": confidence}
    pa, pb = mpf(ca) / na, mpf(cb) / nb
    zl = z_level(confidence)
    pooled = mpf(ca + cb) / (na + nb)
    if pooled == 0 or pooled == 1:
        out["z"] = None
        out["p_value"] = None
    else:
        z = (pb - pa) / mpmath.sqrt(pooled * (1 - pooled) * (mpf(1) / na + mpf(1) / nb))
        out["z"] = f(z)
        out["p_value"] = f(mpmath.erfc(abs(z) / mpmath.sqrt(2)))
    diff = pb - pa
    se = mpmath.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    out["diff"] = [f(diff), f(diff - zl * se), f(diff + zl * se)]
    if pa == 0:
        out["lift"] = None
    else:
        lift = pb / pa - 1
        var = pb * (1 - pb) / (nb * pa ** 2) + pb ** 2 * pa * (1 - pa) / (na * pa ** 4)
        se = mpmath.sqrt(var)
        out["lift"] = [f(lift), f(lift - zl * se), f(lift + zl * se)]
    return out


E8 = 10 ** 8
E6 = 10 ** 6
ARM_PAIRS = [
    ((0, 1), (0, 1)),
    ((0, 1), (1, 1)),
    ((1, 1), (1, 1)),
    ((1, 1), (0, 1)),
    ((0, 10), (0, 10)),
    ((10, 10), (10, 10)),
    ((0, 10), (3, 10)),
    ((3, 10), (0, 10)),
    ((10, 10), (9, 10)),
    ((1, 2), (1, 3)),
    ((5, 20), (7, 25)),
    ((30, 1000), (30, 1000)),
    ((30, 1000), (45, 1000)),
    ((100, 1000), (80, 1000)),
    ((0, 1000), (1000, 1000)),
    ((1000, 1000), (999, 1000)),
    ((50_000, E6), (50_000, E6)),
    ((50_000, E6), (51_500, E6)),
    ((50_000, E6), (60_000, E6)),
    ((1, E6), (0, E6)),
    ((0, E6), (1, E6)),
    ((E6, E6), (E6 - 1, E6)),
    ((123_456, E6), (654_321, E6)),
    ((3_000_000, E8), (3_000_000, E8)),
    ((3_000_000, E8), (3_001_000, E8)),
    ((3_000_000, E8), (3_050_000, E8)),
    ((3_000_000, E8), (3_300_000, E8)),
    ((1, E8), (2, E8)),
    ((0, E8), (5, E8)),
    ((E8, E8), (E8 - 1, E8)),
    ((E8 - 7, E8), (E8, E8)),
    ((50_000_000, E8), (50_020_000, E8)),
    ((50_000_000, E8), (60_000_000, E8)),
    ((1, E8), (E8 - 1, E8)),
    # extreme imbalance between the arms' sizes
    ((1, 10), (3_000_000, E8)),
    ((3_000_000, E8), (1, 10)),
    ((0, 1), (30_000, E6)),
    ((5, 100), (5_000_000, E8)),
    ((999, 1000), (1, E8)),
]
CONFIDENCES = [0.9, 0.95, 0.99, 0.999]


def compare_rows():
    rows = []
    for a, b in ARM_PAIRS:
        for conf in CONFIDENCES:
            rows.append(compare(a, b, conf))
    return rows


def wilson_rows():
    arms = set()
    for a, b in ARM_PAIRS:
        arms.add(a)
        arms.add(b)
    rows = []
    for c, n in sorted(arms):
        for conf in CONFIDENCES + [0.5, 0.999999]:
            lo, hi = wilson(c, n, conf)
            rows.append([c, n, conf, f(lo), f(hi)])
    return rows


def sample_size(p1, mde, power, confidence):
    p1, mde = mpf(p1), mpf(mde)
    p2 = p1 * (1 + mde)
    alpha = 1 - mpf(confidence)
    beta = 1 - mpf(power)
    za = -quantile(alpha / 2)
    zb = -quantile(beta)
    pbar = (p1 + p2) / 2
    num = za * mpmath.sqrt(2 * pbar * (1 - pbar)) + zb * mpmath.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num ** 2 / (p2 - p1) ** 2


SAMPLE_SIZE_SETTINGS = [(0.8, 0.95), (0.5, 0.95), (0.95, 0.95), (0.9, 0.9), (0.8, 0.99)]


def sample_size_rows():
    rows = []
    for p1 in [1e-12, 1e-6, 0.001, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99,
               1 - 1e-12]:
        for mde in [-0.5, -0.1, -0.01, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0]:
            for power, conf in SAMPLE_SIZE_SETTINGS:
                if mpf(p1) * (1 + mpf(mde)) >= 1:
                    continue  # refused: the variant's rate would reach 1
                n = sample_size(p1, mde, power, conf)
                per_variant = int(mpmath.ceil(n))
                for variants in ([2, 3] if (power, conf) == (0.8, 0.95) else [2]):
                    total = per_variant * variants
                    if total > 2 ** 64 - 1:
                        continue  # refused: overflow
                    rows.append({"baseline": p1, "mde": mde, "power": power,
                                 "confidence": conf, "variants": variants, "exact": f(n),
                                 "per_variant": per_variant, "total": total})
    return rows


def srm(visitors, weights):
    total = sum(visitors)
    wsum = sum(mpf(w) for w in weights)
    df = len(visitors) - 1
    if total == 0:
        return {"visitors": visitors, "weights": weights, "chi2": 0.0, "df": df,
                "p_value": 1.0}
    chi2 = mpf(0)
    for o, w in zip(visitors, weights):
        e = total * mpf(w) / wsum
        chi2 += (o - e) ** 2 / e
    p = gamma_q(mpf(df) / 2, chi2 / 2) if chi2 > 0 else mpf(1)
    return {"visitors": visitors, "weights": weights, "chi2": f(chi2), "df": df,
            "p_value": f(p)}


def srm_rows():
    cases = [
        ([0, 0], [1, 1]),
        ([1, 0], [1, 1]),
        ([5000, 5000], [1, 1]),
        ([5000, 5000], [0.5, 0.5]),
        ([5000, 5100], [0.5, 0.5]),
        ([5000, 5300], [1, 1]),
        ([E6, E6 + 2000], [1, 1]),
        ([E8, E8], [1, 1]),
        ([E8, E8 + 20_000], [1, 1]),
        ([E8, E8 + 100_000], [1, 1]),
        ([E8, 1], [1, 1]),
        ([E8, 0], [1, 1]),
        ([900, 100], [0.9, 0.1]),
        ([900, 130], [0.9, 0.1]),
        ([10, 1000], [0.01, 0.99]),
        ([1000, 2000, 1000], [1, 2, 1]),
        ([1000, 2100, 1000], [1, 2, 1]),
        ([200, 300, 500], [0.2, 0.3, 0.5]),
        ([333, 333, 334], [1, 1, 1]),
        ([E8, E8, E8 - 30_000], [1, 1, 1]),
        ([250, 250, 250, 250], [1, 1, 1, 1]),
        ([260, 240, 255, 245], [1, 1, 1, 1]),
        ([10 ** 7, 10 ** 7, 10 ** 7, 2 * 10 ** 7], [1, 1, 1, 1]),
        ([1000, 1010, 990, 1005, 995], [1, 1, 1, 1, 1]),
        ([1000, 1200, 900, 1100, 800], [1, 1, 1, 1, 1]),
        ([E8, E8, E8, E8, 10], [1, 1, 1, 1, 1]),
        ([500, 1000, 1500, 2000, 5000], [5, 10, 15, 20, 50]),
        ([50, 50], [1e-9, 1]),
        ([123, 456], [123, 456]),
        ([3, 7, 11], [0.3, 0.3, 0.4]),
    ]
    return [srm(v, [float(w) for w in w_]) for v, w_ in cases]


# ---------------------------------------------------------------------------------------
# Output: one vector a line
# ---------------------------------------------------------------------------------------

def dump(data):
    parts = ["{"]
    keys = list(data)
    for i, key in enumerate(keys):
        value = data[key]
        comma = "," if i + 1 < len(keys) else ""
        if isinstance(value, list):
            parts.append(f"  {json.dumps(key)}: [")
            for j, row in enumerate(value):
                row_comma = "," if j + 1 < len(value) else ""
                parts.append("    " + json.dumps(row, separators=(", ", ": "),
                                                 allow_nan=False) + row_comma)
            parts.append("  ]" + comma)
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    parts.append("}")
    return "\n".join(parts) + "\n"


def main():
    data = {
        "about": ("Reference values for domain/src/stats/{special,frequentist}.rs, made by "
                  "scripts/stats/frequentist_vectors.py with mpmath at 50 digits from exact "
                  "f64 inputs, rounded once to f64. Do not edit by hand."),
        "versions": {"mpmath": mpmath.__version__, "scipy": scipy.__version__},
        "norm": norm_rows(),
        "norm_quantile": quantile_rows(),
        "ln_gamma": ln_gamma_rows(),
        "gamma_q": gamma_q_rows(),
        "wilson": wilson_rows(),
        "compare": compare_rows(),
        "sample_size": sample_size_rows(),
        "srm": srm_rows(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as out:
        out.write(dump(data))
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    print(f"wrote {os.path.relpath(OUT)}: {counts}")


if __name__ == "__main__":
    main()
