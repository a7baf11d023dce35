"""BG/NBD and Gamma-Gamma fits at scale: the models the profiles asset fits every snapshot.

    python benchmarks/bench_clv.py --customers 1000000 --out benchmarks/results/clv_1m.json

Draws customers from the models themselves (purchase rates from a gamma, dropout
from a beta, spend levels from a gamma), observed for a year in whole days as
the profiles see them, then fits both models by maximum likelihood and predicts
P(alive), expected purchases and CLV for everyone. Reports the seconds of each
step and how close the fitted parameters come to the true ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import command, machine, peak_rss_bytes, write_result  # noqa: E402
from segmentation_pipeline.core import clv  # noqa: E402

TRUE_BG_NBD = {"r": 0.8, "alpha": 60.0, "a": 0.6, "b": 2.5}
TRUE_GAMMA_GAMMA = {"p": 4.0, "q": 3.0, "v": 20.0}


def draw_customers(rng: np.random.Generator, customers: int, days: int):
    """(x, t_x, T, mean repeat spend) per customer, in whole days; first purchases spread over the year."""
    rate = rng.gamma(TRUE_BG_NBD["r"], 1 / TRUE_BG_NBD["alpha"], customers)
    dropout = rng.beta(TRUE_BG_NBD["a"], TRUE_BG_NBD["b"], customers)
    age = np.floor(rng.uniform(0, days, customers))
    moment = np.zeros(customers)
    last = np.zeros(customers)
    repeats = np.zeros(customers, dtype=np.int64)
    # BG/NBD: a customer may drop out after each repeat purchase, never before the first repeat.
    alive = np.ones(customers, dtype=bool)
    while alive.any():
        moment[alive] += rng.exponential(1 / rate[alive])
        purchase = alive & (moment <= age)
        repeats[purchase] += 1
        last[purchase] = moment[purchase]
        alive = purchase & (rng.random(customers) >= dropout)
    recency = np.floor(last)
    # Gamma-Gamma: each customer's spend level nu ~ gamma(q, 1/v); transactions ~ gamma(p, 1/nu).
    level = rng.gamma(TRUE_GAMMA_GAMMA["q"], 1 / TRUE_GAMMA_GAMMA["v"], customers)
    spend = rng.gamma(TRUE_GAMMA_GAMMA["p"] * np.maximum(repeats, 1), 1 / level) / np.maximum(repeats, 1)
    return repeats, recency, age, np.where(repeats > 0, spend, 0.0)


def relative_errors(fitted: dict[str, float], true: dict[str, float]) -> dict[str, float]:
    return {name: round(abs(fitted[name] - value) / value, 4) for name, value in true.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/clv.json"))
    arguments = parser.parse_args()

    x, t_x, age, spend = draw_customers(np.random.default_rng(arguments.seed), arguments.customers, arguments.days)
    seconds = {}
    started = time.perf_counter()
    bg = clv.fit_bg_nbd(x, t_x, age)
    seconds["fit_bg_nbd"] = time.perf_counter() - started
    started = time.perf_counter()
    repeat = x > 0
    gg = clv.fit_gamma_gamma(x[repeat], spend[repeat])
    seconds["fit_gamma_gamma"] = time.perf_counter() - started
    started = time.perf_counter()
    clv.probability_alive(bg, x, t_x, age)
    clv.customer_lifetime_value(bg, gg, x, t_x, age, spend, arguments.days)
    seconds["predict_everyone"] = time.perf_counter() - started
    fitted_bg = {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b}
    fitted_gg = {"p": gg.p, "q": gg.q, "v": gg.v}
    write_result(
        {
            "customers": arguments.customers,
            "repeat_buyers": int(repeat.sum()),
            "days": arguments.days,
            "seconds": {name: round(value, 2) for name, value in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 2),
            "bg_nbd": {"fitted": fitted_bg, "true": TRUE_BG_NBD, "relative_error": relative_errors(fitted_bg, TRUE_BG_NBD)},
            "gamma_gamma": {
                "fitted": fitted_gg,
                "true": TRUE_GAMMA_GAMMA,
                "relative_error": relative_errors(fitted_gg, TRUE_GAMMA_GAMMA),
            },
            "converged": bg.converged and gg.converged,
            "peak_rss_bytes": peak_rss_bytes(),
            "machine": machine(),
            "command": command(),
        },
        arguments.out,
    )


if __name__ == "__main__":
    main()
