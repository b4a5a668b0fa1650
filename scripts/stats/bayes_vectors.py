#!/usr/bin/env python3
"""Reference vectors for the Bayesian A/B statistics (domain/src/stats/bayes.rs, beta.rs).

Run from the repository root:

    python3 scripts/stats/bayes_vectors.py

It needs python3 with mpmath 1.3 and scipy, takes about twelve minutes on one core, and
(re)writes domain/src/stats/vectors/bayes.json.

Arm i with c conversions out of n visitors has the posterior Beta(1 + c, 1 + n - c).

Exact references (mpmath, mp.dps = 60):

* P(p_B > p_A) for integer parameters is a beta-binomial tail (the same identity as Evan
  Miller's closed form): with Y ~ BetaBinomial(a_B + b_B - 1, a_A, b_A),
  P(p_B > p_A) = P(Y <= a_B - 1) and P(p_A > p_B) = P(Y >= a_B). Each side is summed
  directly by the pmf's term ratio from the cut towards its own tail, until the terms are
  below 1e-55 of the sum (the pmf is unimodal), so a tiny probability keeps its relative
  precision; the side holding the mode is 1 minus the other (fine at 60 digits). The arm
  with fewer visitors is the mixing one, so at most ~2e5 terms are summed at 1e8 visitors.
* Expected loss E[max(p_A - p_B, 0)] = m_A P(A+ > B) - m_B P(A > B+), with A+ =
  Beta(a_A + 1, b_A) (x f_{a,b}(x) = m f_{a+1,b}(x)), each P as above; the difference loses
  digits only when the loss is below ~1e-40, which the vectors mark (loss_exact = false).

Cross-checks (the script stops if they disagree):

* Evan Miller's closed form summed literally, term by term with loggamma, for a_B <= 3000
  (agreement to 1e-40 relative);
* quadrature int f_A(x) I_x(a_B, b_B) dx with mpmath.quad on sub-intervals around the mass,
  using mpmath.betainc for counts up to 100 and scipy.special.betainc (Boost, ~1e-15 relative)
  for large ones (agreement to 1e-11 absolute and 1e-7 relative).

prob_best (k = 2..10 arms): mpmath.quad of f_i(x) prod_j F_j(x) on sub-intervals every
half sd out to 12 sd (and to 40 sd) around each arm's mean, with F_j from scipy.special.betainc; a reference good to
~1e-13 absolute, checked against the exact pairwise values for k = 2 and summing to 1.
"""

import json
import os
import sys
import time

import mpmath as mp
from scipy import special as sc

mp.mp.dps = 60
TOL = mp.mpf(10) ** -55


def posterior(c, n):
    return (c + 1, n - c + 1)


def bb_logpmf(nn, al, be, k):
    lg = mp.loggamma
    return (lg(nn + 1) - lg(k + 1) - lg(nn - k + 1)
            + lg(k + al) + lg(nn - k + be) - lg(nn + al + be)
            - (lg(al) + lg(be) - lg(al + be)))


def bb_down(nn, al, be, k):
    """sum_{j <= k} pmf(j), summed from k downwards."""
    if k < 0:
        return mp.mpf(0)
    t = mp.exp(bb_logpmf(nn, al, be, k))
    s = t
    j = k
    while j > 0:
        # pmf(j-1) = pmf(j) * j (nn - j + be) / ((nn - j + 1)(j - 1 + al))
        r = mp.mpf(j) * (nn - j + be) / ((nn - j + 1) * (j - 1 + al))
        t *= r
        s += t
        j -= 1
        if r < 1 and t < TOL * s:
            break
    return s


def bb_up(nn, al, be, k):
    """sum_{j >= k} pmf(j), summed from k upwards."""
    if k > nn:
        return mp.mpf(0)
    t = mp.exp(bb_logpmf(nn, al, be, k))
    s = t
    j = k
    while j < nn:
        r = mp.mpf(nn - j) * (j + al) / ((j + 1) * (nn - j - 1 + be))
        t *= r
        s += t
        j += 1
        if r < 1 and t < TOL * s:
            break
    return s


def bb_split(nn, al, be, k):
    """(P(Y <= k), P(Y > k)) for Y ~ BetaBinomial(nn, al, be), each to relative precision."""
    mean = mp.mpf(nn) * al / (al + be)
    if k < mean:
        low = bb_down(nn, al, be, k)
        return low, 1 - low
    high = bb_up(nn, al, be, k + 1)
    return 1 - high, high


def p_greater(x, y):
    """(P(X > Y), P(Y > X)) for Beta posteriors x = (a, b), y = (a, b) with integer parameters."""
    (ax, bx), (ay, by) = x, y
    if ax + bx <= ay + by:
        # Y' ~ BB(ax + bx - 1, ay, by): P(X > Y) = P(Y' <= ax - 1).
        low, high = bb_split(ax + bx - 1, mp.mpf(ay), mp.mpf(by), ax - 1)
        return low, high
    low, high = bb_split(ay + by - 1, mp.mpf(ax), mp.mpf(bx), ay - 1)
    return high, low


def exact_pair(a, b):
    """P(B > A), P(A > B), E[(pA - pB)+], E[(pB - pA)+] for posteriors a, b."""
    p_ab, p_ba = p_greater(a, b)
    ma = mp.mpf(a[0]) / (a[0] + a[1])
    mb = mp.mpf(b[0]) / (b[0] + b[1])
    a_plus = (a[0] + 1, a[1])
    b_plus = (b[0] + 1, b[1])
    loss_b = ma * p_greater(a_plus, b)[0] - mb * p_greater(a, b_plus)[0]
    loss_a = mb * p_greater(b_plus, a)[0] - ma * p_greater(b, a_plus)[0]
    return p_ba, p_ab, loss_b, loss_a


def miller(a, b):
    """Evan Miller's closed form for P(p_B > p_A), term by term."""
    (aa, ba), (ab, bb) = a, b
    lb = mp.log(mp.beta(aa, ba))
    s = mp.mpf(0)
    for i in range(ab):
        s += mp.exp(mp.log(mp.beta(aa + i, ba + bb)) - mp.log(bb + i)
                    - mp.log(mp.beta(1 + i, bb)) - lb)
    return s


def beta_logpdf(a, b, x):
    return ((a - 1) * mp.log(x) + (b - 1) * mp.log1p(-x)
            - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)))


def breakpoints(params):
    pts = {mp.mpf(0), mp.mpf(1)}
    for a, b in params:
        n = a + b
        m = mp.mpf(a) / n
        sd = mp.sqrt(m * (1 - m) / (n + 1))
        ts = [-40, -30, -20, -16] + [t / 2 for t in range(-24, 25)] + [16, 20, 30, 40]
        for t in ts:
            p = m + t * sd
            if 0 < p < 1:
                pts.add(p)
        # Near a boundary (c = 0 or c = n) the mass is squeezed against it.
        for f in (1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3):
            pts.add(m * f)
            pts.add(1 - (1 - m) * f)
    return sorted(pts)


def cdf(a, b, x, exact):
    if exact:
        return mp.betainc(a, b, 0, x, regularized=True)
    return mp.mpf(float(sc.betainc(float(a), float(b), float(x))))


def quad_best(params, i, exact_cdf, extra=()):
    a, b = params[i]
    pts = sorted(set(breakpoints(params)) | set(extra))

    def f(x):
        if x <= 0 or x >= 1:
            return mp.mpf(0)
        v = mp.exp(beta_logpdf(a, b, x))
        for j, (aj, bj) in enumerate(params):
            if j != i:
                v *= cdf(aj, bj, x, exact_cdf)
        return v

    return mp.quad(f, pts, maxdegree=8)


def check(label, ref, other, abs_tol, rel_tol):
    err = abs(ref - other)
    if err > abs_tol and err > rel_tol * abs(ref):
        sys.exit(f"cross-check failed for {label}: {mp.nstr(ref, 20)} vs {mp.nstr(other, 20)}")


PAIRS = [
    # (control c, n), (variant c, n), what it covers
    ((0, 0), (0, 0), "no visitors: both uniform"),
    ((0, 0), (5, 10), "one arm without visitors"),
    ((0, 10), (0, 10), "tie at zero conversions"),
    ((10, 10), (10, 10), "tie, all converted"),
    ((3, 10), (7, 10), "small"),
    ((0, 100), (100, 100), "none vs all converted"),
    ((0, 1000), (1, 1000), "zero vs one conversion"),
    ((10, 100), (15, 100), "small difference"),
    ((100, 1000), (100, 1000), "tie at 1e3"),
    ((100, 1000), (120, 1000), "1e3"),
    ((300, 1000), (500, 1000), "far apart at 1e3 (P(A>B) ~ 1e-20)"),
    ((100, 1000), (400, 1000), "very far apart at 1e3"),
    ((50, 1000), (700, 1000), "P(A>B) near 1e-250"),
    ((1000, 10000), (1300, 10000), "P(B>A) within 1e-10 of 1"),
    ((1000, 10000), (1350, 10000), "P(B>A) within 1e-13 of 1"),
    ((500000, 1000000), (501000, 1000000), "1e6"),
    ((10000, 1000000), (10000, 1000000), "tie at 1e6"),
    ((10000, 1000000), (10500, 1000000), "1e6, clear winner"),
    ((0, 1000000), (5, 1000000), "1e6, zero vs five"),
    ((1000000, 1000000), (999990, 1000000), "1e6, all converted vs nearly"),
    ((100000, 1000000), (105000, 1000000), "1e6, P(A>B) ~ 1e-32"),
    ((50000000, 100000000), (50010000, 100000000), "1e8"),
    ((50000000, 100000000), (50000001, 100000000), "1e8, one conversion apart"),
    ((1000000, 100000000), (1000000, 100000000), "tie at 1e8"),
    ((1000000, 100000000), (1001000, 100000000), "1e8, 1% rate"),
    ((0, 100000000), (0, 100000000), "1e8, no conversions"),
    ((0, 100000000), (3, 100000000), "1e8, zero vs three"),
    ((100000000, 100000000), (100000000, 100000000), "1e8, all converted"),
    ((100000000, 100000000), (99999998, 100000000), "1e8, all vs nearly all"),
    ((30000000, 100000000), (30030000, 100000000), "1e8, P ~ 1e-6"),
    ((30000000, 100000000), (30100000, 100000000), "1e8, P(A>B) ~ 1e-53"),
    ((3, 10), (30000000, 100000000), "imbalanced 10 vs 1e8"),
    ((5, 10), (50000000, 100000000), "imbalanced 10 vs 1e8, same rate"),
    ((0, 10), (1000000, 100000000), "imbalanced, zero of 10"),
    ((10000000, 100000000), (2, 10), "imbalanced 1e8 vs 10"),
    ((100, 1000), (10000000, 100000000), "imbalanced 1e3 vs 1e8"),
    ((100000, 1000000), (10010000, 100000000), "imbalanced 1e6 vs 1e8"),
    ((2, 100000000), (100, 1000), "imbalanced, far apart"),
]

BEST = [
    [(0, 0), (0, 0), (0, 0)],
    [(10, 100), (15, 100), (12, 100)],
    [(100, 1000), (120, 1000), (110, 1000), (90, 1000)],
    [(100, 1000), (300, 1000), (310, 1000)],
    [(10000, 1000000), (10100, 1000000), (10200, 1000000)],
    [(1000000, 100000000), (1000500, 100000000), (1001000, 100000000), (999000, 100000000)],
    [(50000000, 100000000), (50002000, 100000000), (49999000, 100000000), (50004000, 100000000)],
    [(3, 10), (300, 1000), (30000000, 100000000)],
    # (0, 2 and 1 of 1e8 is left out: the quadrature over scipy's CDFs sums to 1 + 2e-11 there;
    # the exact pairwise vectors cover zero conversions at 1e8.)
    [(10, 100), (15, 100)],
    [(1000000, 100000000), (1001000, 100000000)],
    [(i * 5, 100) for i in range(10)],
]

BETA_PDF = [
    # (a, b, x)
    (1, 1, "0.3"), (2, 5, "0.1"), (0.5, 0.5, "0.2"), (3, 1, "0.999"),
    (1, 100000001, "1e-9"), (50000001, 50000001, "0.5"), (50000001, 50000001, "0.5001"),
    (1000001, 99000001, "0.0101"), (30000001, 70000001, "0.2999"), (7.5, 2.25, "0.6"),
]

STIRLING = ["0.5", "1", "2", "7.5", "14", "15", "16", "100", "12345.5", "1e8"]


def fl(x):
    return float(x)


def main():
    start = time.time()
    pairs = []
    for (ca, na), (cb, nb), what in PAIRS:
        a, b = posterior(ca, na), posterior(cb, nb)
        p_ba, p_ab, loss_b, loss_a = exact_pair(a, b)
        check(what + " sum", mp.mpf(1), p_ba + p_ab, mp.mpf(10) ** -50, 0)
        if b[0] <= 3000:
            check(what + " miller", p_ba, miller(a, b), mp.mpf(10) ** -50, mp.mpf(10) ** -40)
            check(what + " miller swapped", p_ab, miller(b, a), mp.mpf(10) ** -50,
                  mp.mpf(10) ** -40) if a[0] <= 3000 else None
        small = max(na, nb) <= 100
        if p_ab > mp.mpf(10) ** -30:
            q = quad_best([a, b], 0, small)
            check(what + " quad", p_ab, q, mp.mpf(10) ** -11, mp.mpf(10) ** -7)
        pairs.append({
            "what": what,
            "control": [ca, na],
            "variant": [cb, nb],
            "prob_beats_control": fl(p_ba),
            "prob_control_beats": fl(p_ab),
            "expected_loss": fl(loss_b),
            "expected_loss_control": fl(loss_a),
            "loss_exact": bool(min(loss_a, loss_b) > mp.mpf(10) ** -40),
        })
        print(f"{time.time() - start:7.1f}s pair {what}: P(B>A)={mp.nstr(p_ba, 12)} "
              f"P(A>B)={mp.nstr(p_ab, 12)}", flush=True)

    best = []
    for arms in BEST:
        params = [posterior(c, n) for c, n in arms]
        mp.mp.dps = 25
        probs = [quad_best(params, i, False) for i in range(len(params))]
        mp.mp.dps = 60
        check(f"{arms} sum", mp.mpf(1), sum(probs), mp.mpf(10) ** -12, 0)
        if len(params) == 2:
            exact = p_greater(params[0], params[1])
            check(f"{arms} vs exact", exact[0], probs[0], mp.mpf(10) ** -12, mp.mpf(10) ** -9)
            probs = list(exact)
        best.append({"arms": [[c, n] for c, n in arms], "prob_best": [fl(p) for p in probs]})
        print(f"{time.time() - start:7.1f}s best {arms}: {[mp.nstr(p, 10) for p in probs]}",
              flush=True)

    pdf = []
    for a, b, x in BETA_PDF:
        xa = mp.mpf(x)
        pdf.append({"a": a, "b": b, "x": fl(xa), "ln_pdf": fl(beta_logpdf(mp.mpf(a), mp.mpf(b),
                                                                            mp.mpf(fl(xa))))})
    stirling = []
    for z in STIRLING:
        zz = mp.mpf(z)
        d = mp.loggamma(zz + 1) - (zz + mp.mpf(1) / 2) * mp.log(zz) + zz - mp.log(2 * mp.pi) / 2
        stirling.append({"z": fl(zz), "stirling_error": fl(d)})

    out = {
        "generator": "scripts/stats/bayes_vectors.py (mpmath %s, mp.dps 60)" % mp.__version__,
        "pairs": pairs,
        "prob_best": best,
        "beta_ln_pdf": pdf,
        "stirling_error": stirling,
    }
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "domain", "src", "stats", "vectors", "bayes.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
