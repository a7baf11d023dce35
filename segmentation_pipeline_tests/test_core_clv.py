"""BG/NBD and Gamma-Gamma fits against the published CDNOW results, and the models' known properties.

The CDNOW numbers come from Fader, Hardie & Lee (2005), "'Counting Your
Customers' the Easy Way" (BG/NBD: r = 0.243, alpha = 4.414, a = 0.793,
b = 2.426, LL = -9582.4, and 1.226 expected purchases in the next 39 weeks for
a customer with x = 2, t_x = 30.43, T = 38.86), and from the lifetimes
package's documentation of the same data (Gamma-Gamma p = 6.25, q = 3.74,
v = 15.44..15.45; the conditional predictions quoted below). The data file and
its derivation are described in data/cdnow/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import hyp2f1

from segmentation_pipeline.core.clv import (
    MODEL_LABELS,
    MODEL_NAMES,
    BgNbdParams,
    GammaGammaParams,
    MbgNbdParams,
    ParetoNbdParams,
    bg_nbd_log_likelihood,
    customer_lifetime_value,
    discounted_customer_lifetime_value,
    expected_average_spend,
    expected_purchases,
    expected_purchases_unconditional,
    fit_bg_nbd,
    fit_gamma_gamma,
    fit_mbg_nbd,
    fit_model,
    fit_pareto_nbd,
    log_likelihood,
    probability_alive,
)
from segmentation_pipeline.core.errors import DataValidationError, InsufficientDataError

CDNOW = Path(__file__).parent / "data" / "cdnow" / "cdnow_customers_summary_with_transactions.csv"
PUBLISHED_BG = BgNbdParams(
    r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=-9582.4, n_customers=2357, converged=True
)
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    """The 2,357 CDNOW sample customers over the 39-week calibration period (weeks, dollars)."""
    table = np.loadtxt(CDNOW, delimiter=",", skiprows=1)
    return {name: table[:, i] for i, name in enumerate(["id", "x", "t_x", "T", "zbar"])}


@pytest.fixture(scope="module")
def bg(cdnow: dict[str, np.ndarray]) -> BgNbdParams:
    return fit_bg_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def gg(cdnow: dict[str, np.ndarray]) -> GammaGammaParams:
    repeat = cdnow["x"] > 0
    return fit_gamma_gamma(cdnow["x"][repeat], cdnow["zbar"][repeat])


def simulate_bg_nbd(n: int, r: float, alpha: float, a: float, b: float, T: np.ndarray, rng: np.random.Generator):
    """Draw (x, t_x, T) from the BG/NBD: Poisson(lambda) purchases, dropout with probability p after each repeat one.

    The j-th repeat purchase is the last one with probability p (1 - p)^(j-1).
    Given n arrivals of the never-dropping process in (0, T], the x-th is at T
    times a Beta(x, n - x + 1) draw (the x-th of n sorted uniforms).
    """
    lam, p = rng.gamma(r, 1.0 / alpha, n), rng.beta(a, b, n)
    arrivals, last = rng.poisson(lam * T), rng.geometric(p)
    x = np.minimum(last, arrivals)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    return x.astype(float), t_x, T


# --------------------------------------------------------------------------- CDNOW, published values


def test_bg_nbd_fit_reproduces_the_published_cdnow_parameters(bg: BgNbdParams) -> None:
    assert bg.converged
    assert bg.n_customers == 2357
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(PUBLISHED_BG, name), rel=0.01), name
    assert bg.log_likelihood == pytest.approx(-9582.4, abs=0.1)


def test_gamma_gamma_fit_reproduces_the_published_cdnow_parameters(gg: GammaGammaParams) -> None:
    assert gg.converged
    assert gg.n_customers == 946
    for name, value in PUBLISHED_GG.items():
        assert getattr(gg, name) == pytest.approx(value, rel=0.01), name


def test_gamma_gamma_fit_ignores_customers_without_repeat_purchases(cdnow, gg: GammaGammaParams) -> None:
    everyone = fit_gamma_gamma(cdnow["x"], cdnow["zbar"])
    assert (everyone.p, everyone.q, everyone.v, everyone.n_customers) == pytest.approx((gg.p, gg.q, gg.v, 946))


def test_fitted_log_likelihood_is_the_maximum(cdnow, bg: BgNbdParams) -> None:
    data = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert bg_nbd_log_likelihood(bg, *data) == pytest.approx(bg.log_likelihood, abs=1e-6)
    assert bg.log_likelihood >= bg_nbd_log_likelihood(PUBLISHED_BG, *data)


def test_expected_purchases_of_the_papers_example_customer() -> None:
    # FHL 2005: x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in the next 39 weeks.
    assert expected_purchases(PUBLISHED_BG, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


def test_expected_purchases_next_week_match_the_lifetimes_documentation(bg: BgNbdParams) -> None:
    # The five CDNOW customers with the most expected purchases in the next week (IDs 509, 841, 1981, 157, 1516).
    x = np.array([18, 19, 17, 29, 26])
    t_x = np.array([35.14, 34.00, 28.43, 37.71, 30.86])
    T = np.array([35.86, 34.14, 28.86, 38.00, 31.00])
    documented = [0.424877, 0.474738, 0.486526, 0.662396, 0.710623]
    assert expected_purchases(bg, 1, x, t_x, T) == pytest.approx(documented, rel=1e-3)


def test_expected_average_spend_matches_the_lifetimes_documentation(cdnow, gg: GammaGammaParams) -> None:
    documented = [24.658619, 18.911489, 35.170981, 35.170981, 35.170981, 71.462843, 18.911489, 35.170981, 27.282408]
    spend = expected_average_spend(gg, cdnow["x"][:9], cdnow["zbar"][:9])
    assert spend == pytest.approx(documented, rel=1e-4)


# --------------------------------------------------------------------------- BG/NBD properties


def test_probability_alive_is_one_without_repeat_purchases(bg: BgNbdParams) -> None:
    assert probability_alive(bg, [0, 0, 0], [0.0, 0.0, 0.0], [1.0, 20.0, 300.0]) == pytest.approx([1.0, 1.0, 1.0])


def test_probability_alive_falls_as_the_last_purchase_gets_older(bg: BgNbdParams) -> None:
    recency = np.linspace(38.0, 1.0, 20)
    alive = probability_alive(bg, np.full(20, 3), recency, np.full(20, 38.86))
    assert np.all(np.diff(alive) < 0)
    assert np.all((alive > 0) & (alive < 1))


def test_expected_purchases_start_at_zero_and_grow_with_the_horizon(bg: BgNbdParams) -> None:
    t = np.array([0.0, 1.0, 5.0, 39.0, 100.0, 1000.0])
    for x, t_x in [(0, 0.0), (2, 30.43), (10, 5.0)]:
        purchases = expected_purchases(bg, t, x, t_x, 38.86)
        assert purchases[0] == 0.0
        assert np.all(np.diff(purchases) > 0)


def test_expected_purchases_equal_fhl_equation_10_as_written() -> None:
    # Equation 10 evaluated literally (fine for moderate x), against the overflow-safe form in the module.
    params = BgNbdParams(r=0.6, alpha=12.0, a=1.7, b=3.1, log_likelihood=0.0, n_customers=0, converged=True)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T, t = np.array([0, 1, 4, 12]), np.array([0.0, 3.0, 40.0, 90.0]), np.array([10.0, 50.0, 80.0, 100.0]), 52.0
    z = t / (alpha + T + t)
    numerator = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
    )
    literal = numerator / (1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    assert expected_purchases(params, t, x, t_x, T) == pytest.approx(literal, rel=1e-9)


def test_expected_purchases_are_continuous_through_a_equal_to_one() -> None:
    # Equation 10 divides by a - 1; the value at a = 1 is the limit from either side.
    at = {a: BgNbdParams(0.5, 8.0, a, 2.5, 0.0, 0, True) for a in (1.0 - 1e-6, 1.0, 1.0 + 1e-6)}
    values = {
        a: expected_purchases(params, [1.0, 39.0, 1000.0], [0, 3, 10], [0.0, 20.0, 30.0], 40.0)
        for a, params in at.items()
    }
    assert values[1.0] == pytest.approx(values[1.0 - 1e-6], rel=1e-5)
    assert values[1.0] == pytest.approx(values[1.0 + 1e-6], rel=1e-5)


def test_very_frequent_buyers_do_not_overflow(bg: BgNbdParams) -> None:
    # 2000 repeat purchases in 39 weeks: one who just bought buys on; one silent for 34 weeks has gone.
    purchases = expected_purchases(bg, 39, [2000, 2000], [38.86, 5.0], [38.86, 38.86])
    alive = probability_alive(bg, [2000, 2000], [38.86, 5.0], [38.86, 38.86])
    assert np.all(np.isfinite(purchases)) and np.all(purchases >= 0)
    assert purchases[0] > 1000 and alive[1] == pytest.approx(0.0, abs=1e-300)


def test_weights_give_the_same_fit_as_repeated_rows(cdnow) -> None:
    rows = np.column_stack([cdnow["x"], cdnow["t_x"], cdnow["T"]])
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    weighted = fit_bg_nbd(*distinct.T, weights=counts)
    full = fit_bg_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert weighted.n_customers == 2357
    assert (weighted.r, weighted.alpha, weighted.a, weighted.b) == pytest.approx(
        (full.r, full.alpha, full.a, full.b), rel=1e-4
    )
    assert weighted.log_likelihood == pytest.approx(full.log_likelihood, abs=1e-4)


def test_bg_nbd_fit_recovers_the_parameters_of_simulated_customers() -> None:
    rng = np.random.default_rng(7)
    true = {"r": 0.5, "alpha": 8.0, "a": 0.8, "b": 2.5}
    fitted = fit_bg_nbd(*simulate_bg_nbd(20_000, *true.values(), rng.uniform(52.0, 104.0, 20_000), rng))
    assert fitted.converged
    for name, value in true.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.15), name


def test_bg_nbd_alpha_follows_the_time_unit(cdnow, bg: BgNbdParams) -> None:
    in_days = fit_bg_nbd(cdnow["x"], cdnow["t_x"] * 7, cdnow["T"] * 7)
    assert (in_days.r, in_days.alpha / 7, in_days.a, in_days.b) == pytest.approx((bg.r, bg.alpha, bg.a, bg.b), rel=1e-4)
    assert in_days.log_likelihood == pytest.approx(bg.log_likelihood - cdnow["x"].sum() * np.log(7), abs=1e-4)


# --------------------------------------------------------------------------- Gamma-Gamma and CLV


def test_expected_average_spend_shrinks_toward_the_population_mean() -> None:
    params = GammaGammaParams(p=6.0, q=4.0, v=15.0, log_likelihood=0.0, n_customers=0, converged=True)
    population = 6.0 * 15.0 / 3.0  # p v / (q - 1) = 30
    x = np.array([0, 1, 2, 10, 100])
    spend = expected_average_spend(params, x, np.array([0.0, 50.0, 50.0, 50.0, 50.0]))
    weight = 6.0 * x / (6.0 * x + 3.0)  # p x / (p x + q - 1)
    assert spend == pytest.approx((1 - weight) * population + weight * 50.0)
    assert spend[:2] == pytest.approx([30.0, 30.0 / 3 + 50.0 * 2 / 3])
    assert np.all(np.diff(spend[1:]) > 0) and np.all(spend[1:] < 50.0)
    assert params.population_mean_spend == pytest.approx(population)


def test_gamma_gamma_fit_recovers_the_parameters_of_simulated_customers() -> None:
    rng = np.random.default_rng(3)
    n, p, q, v = 20_000, 4.0, 5.0, 60.0
    x = rng.integers(1, 8, n).astype(float)
    nu = rng.gamma(q, 1.0 / v, n)
    mean_value = rng.gamma(p * x, 1.0 / (x * nu))  # the mean of x Gamma(p, nu) values is Gamma(p x, x nu)
    fitted = fit_gamma_gamma(x, mean_value)
    assert (fitted.p, fitted.q, fitted.v) == pytest.approx((p, q, v), rel=0.15)


def test_clv_is_expected_purchases_times_expected_spend(cdnow, bg: BgNbdParams, gg: GammaGammaParams) -> None:
    data = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    clv = customer_lifetime_value(bg, gg, *data, cdnow["zbar"], horizon=52)
    expected = expected_purchases(bg, 52, *data) * expected_average_spend(gg, cdnow["x"], cdnow["zbar"])
    assert clv == pytest.approx(expected)


def test_clv_discounts_each_period_from_its_end(cdnow, bg: BgNbdParams, gg: GammaGammaParams) -> None:
    data = (cdnow["x"][:50], cdnow["t_x"][:50], cdnow["T"][:50], cdnow["zbar"][:50])
    undiscounted = customer_lifetime_value(bg, gg, *data, horizon=1)
    assert customer_lifetime_value(bg, gg, *data, horizon=1, discount_rate_per_period=0.1) == pytest.approx(
        undiscounted / 1.1
    )
    yearly = customer_lifetime_value(bg, gg, *data, horizon=52)
    discounted = customer_lifetime_value(bg, gg, *data, horizon=52, discount_rate_per_period=0.002)
    assert np.all(discounted < yearly) and np.all(discounted > yearly / 1.002**52)
    assert customer_lifetime_value(bg, gg, *data, horizon=51.5, discount_rate_per_period=0.0) == pytest.approx(
        customer_lifetime_value(bg, gg, *data, horizon=51.5, discount_rate_per_period=1e-12)
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1], [1.0, 0.0], [2.0, 2.0], "frequency has 1 negative"),
        ([1, 1], [-1.0, 0.0], [2.0, 2.0], "recency has 1 negative"),
        ([1, 1], [3.0, 1.0], [2.0, 2.0], "recency exceeds T"),
        ([1, 1, 0], [1.0, 1.0], [2.0, 2.0], "same length"),
        ([1.5, 1], [1.0, 1.0], [2.0, 2.0], "whole number"),
        ([1, 1], [np.nan, 1.0], [2.0, 2.0], "recency has 1 missing"),
    ],
)
def test_bad_bg_nbd_input_is_rejected(frequency, recency, T, message) -> None:
    with pytest.raises(DataValidationError, match=message):
        fit_bg_nbd(frequency, recency, T)
    with pytest.raises(DataValidationError, match=message):
        expected_purchases(PUBLISHED_BG, 1.0, frequency, recency, T)
    with pytest.raises(DataValidationError, match=message):
        probability_alive(PUBLISHED_BG, frequency, recency, T)


def test_bg_nbd_needs_enough_customers_and_some_repeat_purchasers() -> None:
    with pytest.raises(InsufficientDataError, match="at least 10 customers"):
        fit_bg_nbd([1, 0, 2], [1.0, 0.0, 3.0], [5.0, 5.0, 5.0])
    with pytest.raises(InsufficientDataError, match="no customer has a repeat purchase"):
        fit_bg_nbd(np.zeros(50), np.zeros(50), np.full(50, 10.0))
    with pytest.raises(DataValidationError, match="weights"):
        fit_bg_nbd(np.ones(20), np.ones(20), np.full(20, 2.0), weights=np.ones(3))
    with pytest.raises(DataValidationError, match="negative"):
        expected_purchases(PUBLISHED_BG, -1.0, 1, 1.0, 2.0)


def test_bad_gamma_gamma_input_is_rejected(gg: GammaGammaParams) -> None:
    with pytest.raises(InsufficientDataError, match="repeat purchasers"):
        fit_gamma_gamma([0, 0, 1, 2], [0.0, 0.0, 10.0, 12.0])
    with pytest.raises(DataValidationError, match="monetary_value is 0"):
        fit_gamma_gamma(np.ones(20), np.zeros(20))
    with pytest.raises(DataValidationError, match="monetary_value has 1 negative"):
        expected_average_spend(gg, [1, 2], [10.0, -3.0])
    with pytest.raises(DataValidationError, match="same length"):
        fit_gamma_gamma(np.ones(20), np.ones(19))


# --------------------------------------------------------------------------- MBG/NBD and Pareto/NBD
#
# Reference values from the lifetimes package 0.11.3 (MIT), run on the same CDNOW summary (x, t_x, T
# in weeks): ModifiedBetaGeoFitter().fit(x, t_x, T) and its conditional_probability_alive,
# conditional_expected_number_of_purchases_up_to_time(39, ...) and
# expected_number_of_purchases_up_to_time; ParetoNBDFitter's methods with params_ set to the published
# Pareto/NBD parameters, and ParetoNBDFitter._conditional_log_likelihood(published, x, t_x, T).sum().
# The customers are IDs 1, 2, 3, 509, 841 and 1981 (rows 0, 1, 2, 508, 840, 1980).

LIFETIMES_MBG = MbgNbdParams(
    r=0.5248377255677019,
    alpha=6.182988479134203,
    a=0.8913562809310627,
    b=1.614000025671838,
    log_likelihood=-9582.13268489992,
    n_customers=2357,
    converged=True,
)
PUBLISHED_PARETO = ParetoNbdParams(
    r=0.553, alpha=10.58, s=0.606, beta=11.67, log_likelihood=-9595.0, n_customers=2357, converged=True
)
REFERENCE_ROWS = [0, 1, 2, 508, 840, 1980]


@pytest.fixture(scope="module")
def mbg(cdnow: dict[str, np.ndarray]) -> MbgNbdParams:
    return fit_mbg_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def pareto(cdnow: dict[str, np.ndarray]) -> ParetoNbdParams:
    return fit_pareto_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])


def reference_customers(cdnow: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(cdnow[name][REFERENCE_ROWS] for name in ("x", "t_x", "T"))


def simulate_pareto_nbd(n: int, r: float, alpha: float, s: float, beta: float, T: np.ndarray, rng):
    """Draw (x, t_x, T) from the Pareto/NBD: Poisson(lambda) purchases over an Exponential(mu) lifetime.

    Given x arrivals in (0, w], w = min(lifetime, T), the last is at w times the largest of x uniforms.
    """
    lam, mu = rng.gamma(r, 1.0 / alpha, n), rng.gamma(s, 1.0 / beta, n)
    window = np.minimum(rng.exponential(1.0 / mu), T)
    x = rng.poisson(lam * window)
    t_x = np.where(x > 0, window * rng.beta(np.maximum(x, 1), 1.0), 0.0)
    return x.astype(float), t_x, T


def simulate_mbg_nbd(n: int, r: float, alpha: float, a: float, b: float, T: np.ndarray, rng):
    """Draw (x, t_x, T) from the MBG/NBD: as the BG/NBD, with a chance p to drop out at time 0 too."""
    lam, p = rng.gamma(r, 1.0 / alpha, n), rng.beta(a, b, n)
    arrivals, last = rng.poisson(lam * T), rng.geometric(p) - 1
    x = np.minimum(last, arrivals)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    return x.astype(float), t_x, T


def test_mbg_nbd_fit_matches_lifetimes_on_cdnow(mbg: MbgNbdParams) -> None:
    assert mbg.converged and mbg.n_customers == 2357
    for name in ("r", "alpha", "a", "b"):
        assert getattr(mbg, name) == pytest.approx(getattr(LIFETIMES_MBG, name), rel=1e-4), name
    assert mbg.log_likelihood == pytest.approx(-9582.13268489992, abs=1e-4)
    assert mbg.parameters == {"r": mbg.r, "alpha": mbg.alpha, "a": mbg.a, "b": mbg.b}


def test_mbg_nbd_predictions_match_lifetimes(cdnow) -> None:
    customers = reference_customers(cdnow)
    alive = [0.7061262587, 0.1708196301, 0.3897164421, 0.9411030233, 0.9557683095, 0.9438824897]
    next_39_weeks = [1.2626707787, 0.1887892404, 0.1539536444, 12.1337099909, 13.39858526, 13.2407904315]
    assert probability_alive(LIFETIMES_MBG, *customers) == pytest.approx(alive, rel=1e-8)
    assert expected_purchases(LIFETIMES_MBG, 39, *customers) == pytest.approx(next_39_weeks, rel=1e-8)
    assert expected_purchases_unconditional(LIFETIMES_MBG, [1.0, 39.0, 78.0]) == pytest.approx(
        [0.0530606294, 1.1822837953, 1.8036361933], rel=1e-8
    )
    one_time_alive = probability_alive(LIFETIMES_MBG, 0, 0.0, [0.0, 1.0, 10.0, 39.0, 100.0])
    assert one_time_alive == pytest.approx([0.6442197549, 0.6259886832, 0.5221727929, 0.3893291361, 0.2893429933])
    all_customers = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert log_likelihood(LIFETIMES_MBG, *all_customers) == pytest.approx(-9582.13268489992, abs=1e-6)


def test_pareto_nbd_fit_reproduces_the_published_cdnow_parameters(cdnow, pareto: ParetoNbdParams) -> None:
    # Fader, Hardie & Lee (2005) note: r = 0.553, alpha = 10.58, s = 0.606, beta = 11.67, LL = -9595.0.
    assert pareto.converged and pareto.n_customers == 2357
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(pareto, name) == pytest.approx(getattr(PUBLISHED_PARETO, name), rel=0.01), name
    assert pareto.log_likelihood == pytest.approx(-9595.0, abs=0.1)
    data = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert log_likelihood(pareto, *data) == pytest.approx(pareto.log_likelihood, abs=1e-6)
    assert pareto.log_likelihood >= log_likelihood(PUBLISHED_PARETO, *data)


def test_pareto_nbd_predictions_match_lifetimes(cdnow) -> None:
    customers = reference_customers(cdnow)
    alive = [0.8691714821, 0.1680288297, 0.2953109046, 0.989332487, 0.9980889948, 0.9928995569]
    next_39_weeks = [1.4550751993, 0.1711135547, 0.1070862648, 12.6946344803, 13.9353907572, 13.8281400119]
    assert probability_alive(PUBLISHED_PARETO, *customers) == pytest.approx(alive, rel=1e-8)
    assert expected_purchases(PUBLISHED_PARETO, 39, *customers) == pytest.approx(next_39_weeks, rel=1e-8)
    assert expected_purchases_unconditional(PUBLISHED_PARETO, [1.0, 39.0, 78.0]) == pytest.approx(
        [0.0509703127, 1.2128057235, 1.9090992449], rel=1e-8
    )
    one_time_alive = probability_alive(PUBLISHED_PARETO, 0, 0.0, [0.5, 1.0, 10.0, 39.0, 100.0])
    assert one_time_alive == pytest.approx([0.9745811049, 0.9502172455, 0.6428354489, 0.2944912976, 0.1279975727])
    all_customers = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert log_likelihood(PUBLISHED_PARETO, *all_customers) == pytest.approx(-9594.97406822389, abs=1e-6)


def test_only_bg_nbd_keeps_a_silent_one_time_buyer_alive(bg, mbg, pareto) -> None:
    T = np.array([0.5, 1.0, 5.0, 20.0, 39.0, 100.0, 1000.0])
    assert probability_alive(bg, 0, 0.0, T) == pytest.approx(np.ones(len(T)))
    for params in (mbg, pareto):
        alive = probability_alive(params, 0, 0.0, T)
        assert np.all(np.diff(alive) < 0) and np.all((alive > 0) & (alive < 1)), params.model
    # A repeat buyer who has just bought is more likely alive than one who bought at the start.
    for params in (bg, mbg, pareto):
        assert probability_alive(params, 3, 38.0, 39.0) > probability_alive(params, 3, 2.0, 39.0)


def test_unconditional_purchases_equal_the_closed_forms(bg, mbg, pareto) -> None:
    t = np.array([0.5, 5.0, 39.0, 150.0])
    z, shrink = t / (bg.alpha + t), (bg.alpha / (bg.alpha + t)) ** bg.r
    bg_eq9 = (bg.a + bg.b - 1) / (bg.a - 1) * (1 - shrink * hyp2f1(bg.r, bg.b, bg.a + bg.b - 1, z))
    assert expected_purchases_unconditional(bg, t) == pytest.approx(bg_eq9, rel=1e-9)
    z, shrink = t / (mbg.alpha + t), (mbg.alpha / (mbg.alpha + t)) ** mbg.r
    mbg_closed = mbg.b / (mbg.a - 1) * (1 - shrink * hyp2f1(mbg.r, mbg.b + 1, mbg.a + mbg.b, z))
    assert expected_purchases_unconditional(mbg, t) == pytest.approx(mbg_closed, rel=1e-9)
    r, alpha, s, beta = pareto.r, pareto.alpha, pareto.s, pareto.beta
    pareto_eq27 = r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))
    assert expected_purchases_unconditional(pareto, t) == pytest.approx(pareto_eq27, rel=1e-9)
    # The first moments: a new customer buys at rate r / alpha, times P(alive) at 0 (b / (a + b) for the MBG/NBD).
    tiny = 1e-6
    assert expected_purchases_unconditional(bg, tiny) / tiny == pytest.approx(bg.r / bg.alpha, rel=1e-4)
    assert expected_purchases_unconditional(mbg, tiny) / tiny == pytest.approx(
        mbg.r / mbg.alpha * mbg.b / (mbg.a + mbg.b), rel=1e-4
    )
    assert expected_purchases_unconditional(pareto, tiny) / tiny == pytest.approx(r / alpha, rel=1e-4)


def test_pareto_nbd_is_continuous_where_alpha_equals_beta_and_s_equals_one() -> None:
    x, t_x, T = np.array([0, 1, 5, 40]), np.array([0.0, 10.0, 30.0, 36.0]), np.full(4, 39.0)

    def at(alpha: float, s: float) -> ParetoNbdParams:
        return ParetoNbdParams(r=0.6, alpha=alpha, s=s, beta=12.0, log_likelihood=0.0, n_customers=0, converged=True)

    for alpha in (12.0 * (1 - 1e-9), 12.0 * (1 + 1e-9)):  # either side of alpha == beta
        assert probability_alive(at(alpha, 0.7), x, t_x, T) == pytest.approx(
            probability_alive(at(12.0, 0.7), x, t_x, T)
        )
        assert log_likelihood(at(alpha, 0.7), x, t_x, T) == pytest.approx(log_likelihood(at(12.0, 0.7), x, t_x, T))
    horizons = np.array([1.0, 39.0, 500.0])
    at_one = expected_purchases(at(9.0, 1.0), horizons, x[:3], t_x[:3], T[:3])
    for s in (1.0 - 1e-7, 1.0 + 1e-7):
        assert at_one == pytest.approx(expected_purchases(at(9.0, s), horizons, x[:3], t_x[:3], T[:3]))


def test_pareto_nbd_alive_term_at_alpha_equal_to_beta_is_the_plain_integral() -> None:
    # With alpha == beta the dropped-out term is s * [(alpha + t_x)^-k - (alpha + T)^-k] / k, k = r + s + x.
    r, alpha, s = 0.6, 10.0, 0.8
    params = ParetoNbdParams(r=r, alpha=alpha, s=s, beta=alpha, log_likelihood=0.0, n_customers=0, converged=True)
    x, t_x, T = np.array([0, 2, 7]), np.array([0.0, 12.0, 30.0]), np.array([20.0, 39.0, 39.0])
    k = r + s + x
    alive_term = (alpha + T) ** -(r + x) * (alpha + T) ** -s
    dropped_term = s * ((alpha + t_x) ** -k - (alpha + T) ** -k) / k
    assert probability_alive(params, x, t_x, T) == pytest.approx(alive_term / (alive_term + dropped_term), rel=1e-12)


def test_pareto_nbd_very_frequent_buyers_do_not_overflow(pareto: ParetoNbdParams) -> None:
    alive = probability_alive(pareto, [2000, 2000], [38.86, 5.0], [38.86, 38.86])
    purchases = expected_purchases(pareto, 39, [2000, 2000], [38.86, 5.0], [38.86, 38.86])
    assert np.all(np.isfinite(purchases)) and purchases[0] > 1000
    assert alive[0] == pytest.approx(1.0) and alive[1] == pytest.approx(0.0, abs=1e-300)


def pareto_odds_by_quadrature(params: ParetoNbdParams, x: int, t_x: float, T: float) -> float:
    """P(dropped) / P(alive) = s * integral over (t_x, T) of ((alpha + T) / (alpha + u))^(r + x)
    * ((beta + T) / (beta + u))^s / (beta + u) du, integrated numerically."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta

    def integrand(u: float) -> float:
        return ((alpha + T) / (alpha + u)) ** (r + x) * ((beta + T) / (beta + u)) ** s / (beta + u)

    return s * quad(integrand, t_x, T, limit=200)[0]


def test_pareto_nbd_takes_the_integral_numerically_where_the_hypergeometric_function_fails() -> None:
    # alpha far above beta with many purchases: scipy's 2F1(1, r + x; r + s + x + 1; z) is NaN at z = 1 - 6e-6.
    lopsided = ParetoNbdParams(r=0.5, alpha=5e5, s=0.1, beta=1.0, log_likelihood=0.0, n_customers=0, converged=True)
    assert np.isnan(hyp2f1(1.0, 300.5, 301.6, (5e5 - 1.0) / (5e5 + 2.0)))
    for x, t_x, T in [(300, 2.0, 40.0), (300, 0.0, 0.5), (2, 2.0, 40.0)]:
        expected = 1 / (1 + pareto_odds_by_quadrature(lopsided, x, t_x, T))
        assert probability_alive(lopsided, x, t_x, T) == pytest.approx(expected, rel=1e-9)
        assert probability_alive(lopsided, [x], [t_x], [T]) == pytest.approx([expected], rel=1e-9)


@pytest.mark.parametrize("fit", [fit_mbg_nbd, fit_pareto_nbd])
def test_weights_give_the_same_fit_as_repeated_rows_for_every_model(cdnow, fit) -> None:
    rows = np.column_stack([cdnow["x"], cdnow["t_x"], cdnow["T"]])
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    weighted = fit(*distinct.T, weights=counts)
    full = fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert weighted.n_customers == 2357
    assert list(weighted.parameters.values()) == pytest.approx(list(full.parameters.values()), rel=1e-4)
    assert weighted.log_likelihood == pytest.approx(full.log_likelihood, abs=1e-4)


def test_mbg_nbd_fit_recovers_the_parameters_of_simulated_customers() -> None:
    rng = np.random.default_rng(7)
    true = {"r": 0.5, "alpha": 8.0, "a": 0.8, "b": 2.5}
    fitted = fit_mbg_nbd(*simulate_mbg_nbd(20_000, *true.values(), rng.uniform(52.0, 104.0, 20_000), rng))
    assert fitted.converged
    for name, value in true.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.15), name


def test_pareto_nbd_fit_recovers_the_parameters_of_simulated_customers() -> None:
    # Whole days over one to two years, as the profiles see them: many customers share (x, t_x, T), so the
    # fit is quick. The lifetime parameters are the less certain: over seeds 0..5, s came back within
    # 6% and beta within 17% of the truth (r and alpha within 5%).
    rng = np.random.default_rng(0)
    true = {"r": 0.5, "alpha": 56.0, "s": 0.7, "beta": 84.0}
    x, t_x, T = simulate_pareto_nbd(20_000, *true.values(), np.floor(rng.uniform(364.0, 728.0, 20_000)), rng)
    fitted = fit_pareto_nbd(x, np.floor(t_x), T)
    assert fitted.converged
    for name, value in true.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.1 if name in ("r", "alpha") else 0.2), name


def test_fit_model_chooses_the_model_by_name(cdnow, bg, mbg, pareto) -> None:
    data = (cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert MODEL_NAMES == ("bg_nbd", "mbg_nbd", "pareto_nbd")
    assert MODEL_LABELS == {"bg_nbd": "BG/NBD", "mbg_nbd": "MBG/NBD", "pareto_nbd": "Pareto/NBD"}
    for params in (bg, mbg, pareto):
        chosen = fit_model(params.model, *data)
        assert type(chosen) is type(params) and chosen == params
        assert log_likelihood(chosen, *data) == pytest.approx(chosen.log_likelihood, abs=1e-6)
    assert bg_nbd_log_likelihood(bg, *data) == pytest.approx(log_likelihood(bg, *data))
    with pytest.raises(DataValidationError, match="unknown purchase model 'pnbd'"):
        fit_model("pnbd", *data)


@pytest.mark.parametrize("name", ["mbg_nbd", "pareto_nbd"])
def test_every_model_needs_enough_customers_and_some_repeat_purchasers(name) -> None:
    with pytest.raises(InsufficientDataError, match="at least 10 customers"):
        fit_model(name, [1, 0, 2], [1.0, 0.0, 3.0], [5.0, 5.0, 5.0])
    with pytest.raises(InsufficientDataError, match="no customer has a repeat purchase"):
        fit_model(name, np.zeros(50), np.zeros(50), np.full(50, 10.0))
    with pytest.raises(DataValidationError, match="recency exceeds T"):
        fit_model(name, np.ones(20), np.full(20, 3.0), np.full(20, 2.0))


# --------------------------------------------------------------------------- CLV with any model, discounted


def test_clv_takes_any_purchase_model(cdnow, gg: GammaGammaParams, mbg: MbgNbdParams, pareto: ParetoNbdParams) -> None:
    data = (cdnow["x"][:100], cdnow["t_x"][:100], cdnow["T"][:100])
    spend = expected_average_spend(gg, cdnow["x"][:100], cdnow["zbar"][:100])
    for params in (mbg, pareto):
        clv = customer_lifetime_value(params, gg, *data, cdnow["zbar"][:100], horizon=52)
        assert clv == pytest.approx(expected_purchases(params, 52, *data) * spend)


def test_clv_periods_can_be_longer_than_the_time_unit(cdnow, pareto: ParetoNbdParams, gg: GammaGammaParams) -> None:
    # Four-week periods over 52 weeks at 1% a period: the purchases of weeks 4k-3 .. 4k discounted by 1.01^k.
    data = (cdnow["x"][:30], cdnow["t_x"][:30], cdnow["T"][:30])
    spend = expected_average_spend(gg, cdnow["x"][:30], cdnow["zbar"][:30])
    cumulative = [expected_purchases(pareto, 4.0 * k, *data) for k in range(14)]
    by_hand = sum((cumulative[k] - cumulative[k - 1]) / 1.01**k for k in range(1, 14)) * spend
    clv = customer_lifetime_value(
        pareto, gg, *data, cdnow["zbar"][:30], horizon=52, discount_rate_per_period=0.01, period=4
    )
    assert clv == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(DataValidationError, match="period must be a positive"):
        customer_lifetime_value(pareto, gg, *data, cdnow["zbar"][:30], horizon=52, period=0.0)


def test_discounted_clv_steps_monthly_at_an_annual_rate(cdnow, mbg: MbgNbdParams, gg: GammaGammaParams) -> None:
    # A model fitted in weeks, a one-year horizon: 12 months of 365.25 / 12 days, each month's purchases
    # discounted from its end at 1.1^(1/12) - 1 a month, so the year's last purchases by 1.1.
    data = (cdnow["x"][:30], cdnow["t_x"][:30], cdnow["T"][:30])
    spend = expected_average_spend(gg, cdnow["x"][:30], cdnow["zbar"][:30])
    month = 365.25 / 12 / 7
    ends = np.minimum(np.arange(1, 13) * month, 365 / 7)
    cumulative = [np.zeros(30)] + [expected_purchases(mbg, end, *data) for end in ends]
    by_hand = sum((cumulative[k] - cumulative[k - 1]) / 1.1 ** (k / 12) for k in range(1, 13)) * spend
    value = discounted_customer_lifetime_value(
        mbg, gg, *data, cdnow["zbar"][:30], horizon_days=365, days_per_time_unit=7
    )
    assert value == pytest.approx(by_hand, rel=1e-12)
    undiscounted = expected_purchases(mbg, 365 / 7, *data) * spend
    assert np.all(value < undiscounted) and np.all(value > undiscounted / 1.1)
    free_money = discounted_customer_lifetime_value(
        mbg, gg, *data, cdnow["zbar"][:30], horizon_days=365, annual_discount_rate=0.0, days_per_time_unit=7
    )
    assert free_money == pytest.approx(undiscounted)
    with pytest.raises(DataValidationError, match="annual_discount_rate"):
        discounted_customer_lifetime_value(mbg, gg, *data, cdnow["zbar"][:30], annual_discount_rate=-0.1)
