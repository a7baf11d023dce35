"""Probabilistic customer lifetime value: BG/NBD purchases times Gamma-Gamma spend.

Two "buy till you die" models, each fitted by maximum likelihood with scipy:

- BG/NBD (Fader, Hardie & Lee 2005, "'Counting Your Customers' the Easy Way:
  An Alternative to the Pareto/NBD Model", Marketing Science 24(2)). While
  alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r,
  alpha); after each repeat purchase they drop out with probability
  p ~ Beta(a, b). A customer is summarised by frequency x (number of repeat
  purchases), recency t_x (time of the last purchase, counted from the first
  one) and T (time from the first purchase to the end of observation), all in
  one time unit of the caller's choice; alpha is in that unit.
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves
  for Customer Base Analysis", Journal of Marketing Research 42(4)). A
  customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, v); it is
  fitted on the mean value m of each repeat purchaser's repeat transactions.

The log-likelihoods are the numerically stable forms (gammaln, logaddexp) that
the lifetimes package also uses, maximised over log-parameters with L-BFGS-B
and an analytic gradient. Identical (x, t_x, T) rows are collapsed into one
weighted row first, and times are divided by a scale factor while fitting, so
a million customers fit in a second or two.

customer_lifetime_value multiplies the two: expected purchases over a horizon
times the expected average spend, optionally discounted per period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, hyp2f1

from .errors import DataValidationError, InsufficientDataError

MIN_CUSTOMERS_TO_FIT = 10
"""Fewer customers (repeat purchasers for Gamma-Gamma) than this cannot be fitted."""

_LOG_PARAM_BOUND = 20.0
"""Fitted log-parameters are kept within +-this (parameters within about 2e-9 .. 5e8)."""

_OPTIMIZER_OPTIONS = {"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9}
#: Largest gradient component (of the mean log-likelihood in log-parameters) taken as an optimum.
_STATIONARY_GRADIENT = 1e-5


@dataclass(frozen=True)
class BgNbdParams:
    """Fitted BG/NBD parameters: lambda ~ Gamma(r, alpha), p ~ Beta(a, b); alpha is in the data's time unit."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool


@dataclass(frozen=True)
class GammaGammaParams:
    """Fitted Gamma-Gamma parameters: transaction value ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float
    log_likelihood: float
    n_customers: int
    converged: bool

    @property
    def population_mean_spend(self) -> float:
        """E[M] = p * v / (q - 1), the mean transaction value over all customers (infinite when q <= 1)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else float("inf")


# --------------------------------------------------------------------------- validation


def _array(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataValidationError(f"{name} has {int(bad.sum())} missing or infinite value(s)")
    negative = array < 0
    if negative.any():
        raise DataValidationError(f"{name} has {int(negative.sum())} negative value(s), e.g. {array[negative].flat[0]}")
    return array


def _same_shape(**arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays broadcast to one shape; a scalar may stand for everyone, other arrays must match exactly."""
    shapes = {name: array.shape for name, array in arrays.items()}
    if len({shape for shape in shapes.values() if shape}) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise DataValidationError(f"inputs must have the same length: {described}")
    return tuple(np.broadcast_arrays(*arrays.values()))


def _frequency(values: ArrayLike) -> np.ndarray:
    x = _array("frequency", values)
    fractional = x != np.floor(x)
    if fractional.any():
        raise DataValidationError(f"frequency must be a whole number of repeat purchases, got {x[fractional].flat[0]}")
    return x


def _rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, age = _frequency(frequency), _array("recency", recency), _array("T", T)
    x, t_x, age = _same_shape(frequency=x, recency=t_x, T=age)
    late = t_x > age
    if late.any():
        raise DataValidationError(
            f"recency exceeds T for {int(late.sum())} customer(s), e.g. recency {t_x[late].flat[0]} > T {age[late].flat[0]}"
        )
    return x, t_x, age


def _weights(weights: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if weights is None:
        return np.ones(shape)
    w = _array("weights", weights)
    if w.shape != shape:
        raise DataValidationError(f"weights must have the same length as the data: {w.shape} != {shape}")
    return w


def _require_customers(count: float, what: str) -> None:
    if count < MIN_CUSTOMERS_TO_FIT:
        raise InsufficientDataError(f"need at least {MIN_CUSTOMERS_TO_FIT} {what} to fit, got {count:g}")


def _collapse(columns: list[np.ndarray], weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Merge identical rows into one row weighted by the sum of their weights.

    Each column is coded by its distinct values and the codes are packed into
    one int64 key, whose 1-D np.unique is several times faster than
    np.unique(..., axis=0) on a float matrix.
    """
    key = np.zeros(len(weights), dtype=np.int64)
    capacity = 1
    for column in columns:
        distinct, code = np.unique(column, return_inverse=True)
        capacity *= len(distinct)
        if capacity >= 2**62:  # cannot pack: fall back to the slower row-wise unique
            rows, inverse = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
            return list(rows.T), np.bincount(inverse.ravel(), weights=weights)
        key = key * len(distinct) + code
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return [column[first] for column in columns], np.bincount(inverse, weights=weights)


def _minimize(objective, start: np.ndarray, args: tuple) -> tuple[np.ndarray, bool]:
    bounds = [(-_LOG_PARAM_BOUND, _LOG_PARAM_BOUND)] * len(start)
    result = minimize(
        objective, start, args=args, jac=True, method="L-BFGS-B", bounds=bounds, options=_OPTIMIZER_OPTIONS
    )
    if not result.success:  # a line-search stall is usually cured by restarting from where it stopped
        result = minimize(
            objective, result.x, args=args, jac=True, method="L-BFGS-B", bounds=bounds, options=_OPTIMIZER_OPTIONS
        )
    at_bound = np.any(np.abs(result.x) >= _LOG_PARAM_BOUND - 1e-6)
    # With tolerances this tight, L-BFGS-B can end "ABNORMAL" (no line-search progress) at the
    # optimum itself; a vanishing gradient of the mean log-likelihood says it is there.
    stationary = result.success or float(np.max(np.abs(result.jac))) <= _STATIONARY_GRADIENT
    return result.x, bool(stationary and not at_bound)


# --------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True)
class _BgNbdData:
    x: np.ndarray  # per collapsed row
    t_x: np.ndarray
    T: np.ndarray
    w: np.ndarray
    x_values: np.ndarray  # distinct frequencies
    x_index: np.ndarray  # row -> position in x_values
    w_by_x: np.ndarray  # total weight per distinct frequency


def _bg_nbd_terms(theta: np.ndarray, d: _BgNbdData) -> tuple[float, np.ndarray]:
    """Mean negative BG/NBD log-likelihood (FHL 2005) and its gradient in log-parameters.

    LL_i = A1 + A2 + log(exp(A3) + [x > 0] exp(A4)) with
    A1 = lnG(r + x) - lnG(r) + r ln(alpha), A2 = lnB(a, b + x) - lnB(a, b),
    A3 = -(r + x) ln(alpha + T), A4 = ln(a / (b + x - 1)) - (r + x) ln(alpha + t_x).
    Terms that depend on x alone are computed once per distinct x.
    """
    r, alpha, a, b = np.exp(theta)
    xv, wx = d.x_values, d.w_by_x
    repeat_v = xv > 0
    a1 = gammaln(r + xv) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + xv) - gammaln(b) - gammaln(a + b + xv)
    log_a_over_b = np.where(repeat_v, np.log(a) - np.log(np.where(repeat_v, b + xv - 1.0, 1.0)), -np.inf)

    rx = r + d.x
    log_age, log_last = np.log(alpha + d.T), np.log(alpha + d.t_x)
    a3 = -rx * log_age
    a4 = log_a_over_b[d.x_index] - rx * log_last
    ll_rows = np.logaddexp(a3, a4)
    share = np.exp(a4 - ll_rows)  # weight of the "dropped out after t_x" branch; 0 when x == 0
    w_share = d.w * share
    w_share_by_x = np.bincount(d.x_index, weights=w_share, minlength=len(xv))

    total = wx.sum()
    ll = wx @ (a1 + a2) + d.w @ ll_rows
    d_r = wx @ (digamma(r + xv) - digamma(r) + np.log(alpha)) - d.w @ ((1.0 - share) * log_age + share * log_last)
    d_alpha = wx.sum() * r / alpha - (d.w * rx) @ ((1.0 - share) / (alpha + d.T) + share / (alpha + d.t_x))
    ab_x = digamma(a + b) - digamma(a + b + xv)
    d_a = wx @ ab_x + w_share.sum() / a
    d_b = wx @ (ab_x + digamma(b + xv) - digamma(b)) - w_share_by_x[repeat_v] @ (1.0 / (b + xv[repeat_v] - 1.0))
    gradient = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return -ll / total, -gradient / total


def _bg_nbd_data(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, scale: float) -> _BgNbdData:
    (x, t_x, T), w = _collapse([x, t_x, T], w)
    x_values, x_index = np.unique(x, return_inverse=True)
    w_by_x = np.bincount(x_index, weights=w)
    return _BgNbdData(x, t_x / scale, T / scale, w, x_values, x_index, w_by_x)


def bg_nbd_log_likelihood(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> float:
    """Total BG/NBD log-likelihood (FHL 2005) of the given customers under params."""
    x, t_x, age = _rft(frequency, recency, T)
    data = _bg_nbd_data(x.ravel(), t_x.ravel(), age.ravel(), np.ones(x.size), 1.0)
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return -float(_bg_nbd_terms(theta, data)[0]) * x.size


def fit_bg_nbd(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> BgNbdParams:
    """Fit the BG/NBD model (Fader, Hardie & Lee 2005) by maximum likelihood.

    frequency: repeat purchases x; recency: t_x; T: customer age, in any one
    time unit (alpha comes back in that unit). weights, if given, is how many
    customers each row stands for. Rows with equal (x, t_x, T) are collapsed
    and times are scaled to at most 10 while fitting; the log-likelihood is
    maximised over log(r, alpha, a, b) by L-BFGS-B with an analytic gradient.

    Raises DataValidationError for negative, missing or fractional
    frequencies, negative times, recency > T or mismatched lengths, and
    InsufficientDataError for fewer than MIN_CUSTOMERS_TO_FIT customers or no
    repeat purchaser.
    """
    x, t_x, age = _rft(frequency, recency, T)
    w = _weights(weights, x.shape)
    keep = w.ravel() > 0
    x, t_x, age, w = x.ravel()[keep], t_x.ravel()[keep], age.ravel()[keep], w.ravel()[keep]
    _require_customers(w.sum(), "customers")
    if not (x > 0).any():
        raise InsufficientDataError("no customer has a repeat purchase (frequency > 0): the BG/NBD cannot be fitted")

    scale = float(age.max()) / 10.0 or 1.0
    data = _bg_nbd_data(x, t_x, age, w, scale)
    mean_rate = (w @ x) / (w @ (age / scale))
    start = np.log([1.0, 1.0 / max(mean_rate, 1e-6), 1.0, 1.0])
    theta, converged = _minimize(_bg_nbd_terms, start, (data,))
    r, alpha_scaled, a, b = np.exp(theta)
    # The likelihood in scaled time differs from the one in original time by sum(w * x) * ln(scale).
    log_likelihood = -float(_bg_nbd_terms(theta, data)[0]) * w.sum() - (w @ x) * np.log(scale)
    return BgNbdParams(
        r=float(r),
        alpha=float(alpha_scaled * scale),
        a=float(a),
        b=float(b),
        log_likelihood=float(log_likelihood),
        n_customers=int(round(w.sum())),
        converged=converged,
    )


def _log_odds_dropped(params: BgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln(a / (b + x - 1)) + (r + x) ln((alpha + T) / (alpha + t_x)); -inf when x == 0."""
    repeat = x > 0
    ratio = params.a / np.where(repeat, params.b + x - 1.0, 1.0)
    log_odds = np.log(ratio) + (params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + t_x))
    return np.where(repeat, log_odds, -np.inf)


def probability_alive(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(alive | x, t_x, T) under the BG/NBD (Fader, Hardie & Lee, "Computing P(alive) Using the BG/NBD Model").

    P = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)),
    evaluated as exp(-logaddexp(0, log of the second term)) so that it cannot
    overflow; it is exactly 1 for a customer with no repeat purchase.
    """
    x, t_x, age = _rft(frequency, recency, T)
    return np.exp(-np.logaddexp(0.0, _log_odds_dropped(params, x, t_x, age)))


def _expected_purchases(params: BgNbdParams, t: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    """FHL 2005 eq. 10, with the 2F1 term rewritten by Euler's transformation.

    (1 - z)^(r+x) 2F1(r+x, b+x; c; z) = (1 - z)^(a-1) 2F1(a+b-1-r, a-1; c; z), with
    c = a + b + x - 1 and z = t / (alpha + T + t). The left side overflows for
    large x; the right side's 2F1 tends to 1 as x grows.
    """
    r, alpha, b = params.r, params.alpha, params.b
    a = params.a if abs(params.a - 1.0) > 1e-7 else 1.0 + 1e-7  # eq. 10 is 0/0 at a = 1; use the limit's neighbour
    c = a + b + x - 1.0
    one_minus_z = (alpha + T) / (alpha + T + t)
    transformed = one_minus_z ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, 1.0 - one_minus_z)
    p_alive = np.exp(-np.logaddexp(0.0, _log_odds_dropped(params, x, t_x, T)))
    return c / (a - 1.0) * (1.0 - transformed) * p_alive


def expected_purchases(
    params: BgNbdParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected purchases in the next t time units (FHL 2005, eq. 10).

    E = (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
        * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P(alive | x, t_x, T).
    t may be a scalar or an array broadcastable against the customers'.
    """
    x, t_x, age = _rft(frequency, recency, T)
    return _expected_purchases(params, _array("t", t), x, t_x, age)


# --------------------------------------------------------------------------- Gamma-Gamma


def _gamma_gamma_terms(
    theta: np.ndarray, x_values: np.ndarray, x_index: np.ndarray, m: np.ndarray, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of the Gamma-Gamma model and its gradient in log-parameters.

    The density of the mean m of x transactions (FHL 2005, "RFM and CLV"), with nu
    integrated out, is Gamma(px + q) / (Gamma(px) Gamma(q)) v^q m^(px-1) x^(px) / (v + xm)^(px+q).
    """
    p, q, v = np.exp(theta)
    x = x_values[x_index]
    w_by_x = np.bincount(x_index, weights=w, minlength=len(x_values))
    per_x = gammaln(p * x_values + q) - gammaln(p * x_values) - gammaln(q) + q * np.log(v)
    psi_pxq = digamma(p * x_values + q)
    log_spend = np.log(x * m + v)
    log_mx = np.log(m) + np.log(x)
    ll = w_by_x @ per_x + w @ (p * x * log_mx - np.log(m) - (p * x + q) * log_spend)
    d_p = (w_by_x * x_values) @ (psi_pxq - digamma(p * x_values)) + (w * x) @ (log_mx - log_spend)
    d_q = w_by_x @ (psi_pxq - digamma(q) + np.log(v)) - w @ log_spend
    d_v = w.sum() * q / v - w @ ((p * x + q) / (x * m + v))
    total = w.sum()
    return -ll / total, -np.array([d_p * p, d_q * q, d_v * v]) / total


def _spend_inputs(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, m = _frequency(frequency), _array("monetary_value", monetary_value)
    x, m = _same_shape(frequency=x, monetary_value=m)
    free = (x > 0) & (m == 0)
    if free.any():
        raise DataValidationError(f"monetary_value is 0 for {int(free.sum())} repeat purchaser(s); it must be > 0")
    return x, m


def fit_gamma_gamma(
    frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None
) -> GammaGammaParams:
    """Fit the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV") by maximum likelihood.

    Only repeat purchasers (frequency > 0) enter the fit; monetary_value is the
    mean value of each one's repeat transactions (must be > 0). Values are
    divided by their mean while fitting (v is rescaled back); the
    log-likelihood is maximised over log(p, q, v) by L-BFGS-B with an analytic
    gradient. Raises DataValidationError for bad input and InsufficientDataError
    for fewer than MIN_CUSTOMERS_TO_FIT repeat purchasers.
    """
    x, m = _spend_inputs(frequency, monetary_value)
    w = _weights(weights, x.shape)
    keep = (x.ravel() > 0) & (w.ravel() > 0)
    x, m, w = x.ravel()[keep], m.ravel()[keep], w.ravel()[keep]
    _require_customers(w.sum(), "repeat purchasers (frequency > 0)")

    scale = float((w @ m) / w.sum())
    x_values, x_index = np.unique(x, return_inverse=True)
    args = (x_values, x_index, m / scale, w)
    theta, converged = _minimize(_gamma_gamma_terms, np.zeros(3), args)
    p, q, v_scaled = np.exp(theta)
    # Dividing m by scale adds ln(scale) per customer to the log-density of m.
    log_likelihood = -float(_gamma_gamma_terms(theta, *args)[0]) * w.sum() - w.sum() * np.log(scale)
    return GammaGammaParams(
        p=float(p),
        q=float(q),
        v=float(v_scaled * scale),
        log_likelihood=float(log_likelihood),
        n_customers=int(round(w.sum())),
        converged=converged,
    )


def _expected_average_spend(params: GammaGammaParams, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, v = params.p, params.q, params.v
    denominator = p * x + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        spend = p * (v + x * m) / denominator
    return np.where(denominator > 0, spend, np.inf)


def expected_average_spend(params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
    """E[M | x, m]: a customer's expected average transaction value (FHL 2005, "RFM and CLV").

    E = p (v + x m) / (p x + q - 1)
      = (q - 1) / (p x + q - 1) * p v / (q - 1) + p x / (p x + q - 1) * m,
    a weighted mean of the population mean p v / (q - 1) and the customer's own
    mean m that leans toward m as x grows. For x == 0 it is the population
    mean (m is ignored); it is infinite where p x + q <= 1.
    """
    x, m = _spend_inputs(frequency, monetary_value)
    return _expected_average_spend(params, x, m)


# --------------------------------------------------------------------------- CLV


def customer_lifetime_value(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon: float,
    discount_rate_per_period: float = 0.0,
) -> np.ndarray:
    """Expected value of each customer's purchases over the next `horizon` time units.

    CLV = sum over periods k = 1 .. ceil(horizon) of
          (E[Y(k) | x, t_x, T] - E[Y(k - 1) | x, t_x, T]) * E[M | x, m] / (1 + d)^k,
    where a period is one time unit of the BG/NBD data (the last one cut at
    horizon), E[Y] is expected_purchases, E[M] is expected_average_spend and d
    is discount_rate_per_period; purchases in period k are discounted to now
    from the period's end. With d = 0 this is E[Y(horizon)] * E[M]. The two
    models are taken as independent, as the Gamma-Gamma model assumes.
    Discounting costs one expected_purchases evaluation per period.
    """
    x, t_x, age = _rft(frequency, recency, T)
    spend = _expected_average_spend(gg, *_spend_inputs(frequency, monetary_value))
    _same_shape(frequency=x, monetary_value=spend)
    horizon = float(_array("horizon", horizon))
    rate = float(_array("discount_rate_per_period", discount_rate_per_period))
    if rate == 0.0:
        return _expected_purchases(bg, np.asarray(horizon), x, t_x, age) * spend
    ends = np.minimum(np.arange(1, int(np.ceil(horizon)) + 1, dtype=float), horizon)
    discounted, before = np.zeros_like(x), np.zeros_like(x)
    for k, end in enumerate(ends, start=1):
        cumulative = _expected_purchases(bg, np.asarray(end), x, t_x, age)
        discounted += (cumulative - before) / (1.0 + rate) ** k
        before = cumulative
    return discounted * spend
