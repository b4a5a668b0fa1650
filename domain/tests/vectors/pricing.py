#!/usr/bin/env python3
"""Reference vectors for OCart's offer pricing (domain/src/offer/pricing.rs).

For each (currency, amount in minor units, percentage in basis points) it computes, in
arbitrary precision with mpmath, the percentage of the amount rounded to the minor unit half
away from zero, and the discounted price (amount minus that rounded discount). Run:

    pip install mpmath==1.3.0
    python3 domain/tests/vectors/pricing.py > domain/tests/vectors/pricing.json
"""
import json
import random

import mpmath

mpmath.mp.dps = 60  # far more digits than any i64 × 10000 needs
MAX_AMOUNT = 100_000_000_000


def round_half_away(x):
    """x rounded to an integer, halves away from zero (exact at 60 digits)."""
    f = mpmath.floor(abs(x))
    frac = abs(x) - f
    n = f + 1 if frac >= mpmath.mpf("0.5") else f
    return int(n if x >= 0 else -n)


def case(currency, amount, bp):
    share = mpmath.mpf(amount) * mpmath.mpf(bp) / mpmath.mpf(10_000)
    off = round_half_away(share)
    return {
        "currency": currency,
        "amount": amount,
        "basis_points": bp,
        "percent_of": off,
        "discounted": amount - off,
    }


def main():
    rng = random.Random(20261201)
    cases = []
    edges_amount = [0, 1, 2, 3, 5, 9, 10, 19, 20, 99, 100, 101, 999, 1000, 4999, 5000, 9999,
                    10_000, 12345, MAX_AMOUNT - 1, MAX_AMOUNT]
    edges_bp = [0, 1, 2, 5, 10, 25, 50, 99, 100, 125, 333, 1250, 3333, 5000, 6667, 9999, 10_000]
    for currency in ["EUR", "JPY", "KWD"]:
        for a in edges_amount:
            for bp in edges_bp:
                cases.append(case(currency, a, bp))
    # Exact halves: amount × bp ≡ 5000 (mod 10000), where half-up and half-even differ.
    for _ in range(300):
        bp = rng.choice([1250, 2500, 5000, 7500, 50, 250, 3750])
        a = rng.randrange(1, MAX_AMOUNT)
        while (a * bp) % 10_000 != 5000:
            a = rng.randrange(1, MAX_AMOUNT)
        cases.append(case("EUR", a, bp))
    for _ in range(1000):
        cases.append(case(rng.choice(["EUR", "USD", "JPY", "KWD"]),
                          rng.randrange(0, MAX_AMOUNT + 1), rng.randrange(0, 10_001)))
    json.dump(cases, fp=__import__("sys").stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
