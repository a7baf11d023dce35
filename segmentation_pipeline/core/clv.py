"""Probabilistic customer lifetime value: purchase models times Gamma-Gamma spend.

Three "buy till you die" purchase models and one spend model, each fitted by
maximum likelihood with scipy. A customer is summarised by frequency x (number
of repeat purchases), recency t_x (time of the last purchase, counted from the
first one) and T (time from the first purchase to the end of observation), all
in one time unit of the caller's choice; the models' rate and lifetime scales
(alpha, beta) are in that unit.

- BG/NBD (Fader, Hardie & Lee 2005, "'Counting Your Customers' the Easy Way:
  An Alternative to the Pareto/NBD Model", Marketing Science 24(2)). While
  alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r,
  alpha); after each repeat purchase they drop out with probability
  p ~ Beta(a, b). A one-time buyer is alive for sure, whatever their silence.
- MBG/NBD (Batislam, Denizel & Filiztekin 2007, "Empirical validation and
  comparison of models for customer base analysis", IJRM 24(3); Wagner & Hoppe
  2008, "Erratum on the MBG/NBD model", IJRM 25(3)). The BG/NBD with one more
  chance to drop out, right after the first purchase (time 0), so that a
  one-time buyer's P(alive) falls with silence too.
- Pareto/NBD (Schmittlein, Morrison & Colombo 1987, "Counting Your Customers:
  Who Are They and What Will They Do Next?", Management Science 33(1); Fader,
  Hardie & Lee 2005, "A Note on Deriving the Pareto/NBD Model and Related
  Expressions"). Purchases as in the BG/NBD, but a customer's lifetime is
  exponential with rate mu ~ Gamma(s, beta), independent of purchasing.
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves
  for Customer Base Analysis", Journal of Marketing Research 42(4)). A
  customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, v); it is
  fitted on the mean value m of each repeat purchaser's repeat transactions.

The log-likelihoods are numerically stable forms (gammaln, logaddexp, and for
the Pareto/NBD a hypergeometric function that stays bounded), maximised over
log-parameters with L-BFGS-B: with an analytic gradient for the BG/NBD,
MBG/NBD and Gamma-Gamma, with central differences for the Pareto/NBD. Identical
(x, t_x, T) rows are collapsed into one weighted row first, and times are
divided by a scale factor while fitting, so a million customers fit in seconds.

fit_model, probability_alive, expected_purchases, expected_purchases_unconditional
and log_likelihood take any of the three purchase models (chosen by name:
MODEL_NAMES). customer_lifetime_value multiplies expected purchases over a
horizon by the expected average spend, optionally discounted per period;
discounted_customer_lifetime_value does so in monthly steps at an annual rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, hyp2f1

from .errors import DataValidationError, InsufficientDataError

MIN_CUSTOMERS_TO_FIT = 10
"""Fewer customers (repeat purchasers for Gamma-Gamma) than this cannot be fitted."""

MODEL_NAMES = ("bg_nbd", "mbg_nbd", "pareto_nbd")
"""The purchase models fit_model knows, by name."""

_LOG_PARAM_BOUND = 20.0
"""Fitted log-parameters are kept within +-this (parameters within about 2e-9 .. 5e8)."""

_OPTIMIZER_OPTIONS = {"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-9}
#: Largest gradient component (of the mean log-likelihood in log-parameters) taken as an optimum.
_STATIONARY_GRADIENT = 1e-5
#: Step in log-parameters of the Pareto/NBD's central-difference gradient: its error, about
#: step^2 * (third derivative) + 1e-16 / step, stays near 1e-10, far below _STATIONARY_GRADIENT.
_DIFFERENCE_STEP = 1e-5


@dataclass(frozen=True)
class BgNbdParams:
    """Fitted BG/NBD parameters: lambda ~ Gamma(r, alpha), p ~ Beta(a, b); alpha is in the data's time unit."""

    model: ClassVar[str] = "bg_nbd"
    label: ClassVar[str] = "BG/NBD"

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool

    @property
    def parameters(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class MbgNbdParams:
    """Fitted MBG/NBD parameters: lambda ~ Gamma(r, alpha), p ~ Beta(a, b); alpha is in the data's time unit."""

    model: ClassVar[str] = "mbg_nbd"
    label: ClassVar[str] = "MBG/NBD"

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int
    converged: bool

    @property
    def parameters(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class ParetoNbdParams:
    """Fitted Pareto/NBD parameters: lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta); alpha, beta in the data's time unit."""

    model: ClassVar[str] = "pareto_nbd"
    label: ClassVar[str] = "Pareto/NBD"

    r: float
    alpha: float
    s: float
    beta: float
    log_likelihood: float
    n_customers: int
    converged: bool

    @property
    def parameters(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "s": self.s, "beta": self.beta}


PurchaseModelParams = BgNbdParams | MbgNbdParams | ParetoNbdParams
"""Fitted parameters of any of the purchase models."""

MODEL_LABELS = {params.model: params.label for params in (BgNbdParams, MbgNbdParams, ParetoNbdParams)}
"""How each model is written for people: "bg_nbd" -> "BG/NBD"."""


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


# --------------------------------------------------------------------------- fitting, shared


def _fit_inputs(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None, label: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Validated x, t_x, T and weights of the rows with weight, and the time scale to fit in."""
    x, t_x, age = _rft(frequency, recency, T)
    w = _weights(weights, x.shape)
    keep = w.ravel() > 0
    x, t_x, age, w = x.ravel()[keep], t_x.ravel()[keep], age.ravel()[keep], w.ravel()[keep]
    _require_customers(w.sum(), "customers")
    if not (x > 0).any():
        raise InsufficientDataError(f"no customer has a repeat purchase (frequency > 0): the {label} cannot be fitted")
    return x, t_x, age, w, float(age.max()) / 10.0 or 1.0


# --------------------------------------------------------------------------- BG/NBD and MBG/NBD


@dataclass(frozen=True)
class _BgNbdData:
    x: np.ndarray  # per collapsed row
    t_x: np.ndarray
    T: np.ndarray
    w: np.ndarray
    x_values: np.ndarray  # distinct frequencies
    x_index: np.ndarray  # row -> position in x_values
    w_by_x: np.ndarray  # total weight per distinct frequency
    #: 1 for the MBG/NBD, where a customer can drop out at time 0 too; 0 for the BG/NBD.
    start_dropout: int = 0


def _bg_nbd_terms(theta: np.ndarray, d: _BgNbdData) -> tuple[float, np.ndarray]:
    """Mean negative BG/NBD (or MBG/NBD) log-likelihood and its gradient in log-parameters.

    BG/NBD (FHL 2005): LL_i = A1 + A2 + log(exp(A3) + [x > 0] exp(A4)) with
    A1 = lnG(r + x) - lnG(r) + r ln(alpha), A2 = lnB(a, b + x) - lnB(a, b),
    A3 = -(r + x) ln(alpha + T), A4 = ln(a / (b + x - 1)) - (r + x) ln(alpha + t_x).
    The MBG/NBD (Batislam et al. 2007) has x + 1 chances to drop out where the
    BG/NBD has x: A2 = lnB(a, b + x + 1) - lnB(a, b), A4 = ln(a / (b + x)) - ...,
    and the A4 branch applies for every x. With k = start_dropout both are
    written with x + k in place of x in A2 and A4's ratio.
    Terms that depend on x alone are computed once per distinct x.
    """
    r, alpha, a, b = np.exp(theta)
    xv, wx = d.x_values, d.w_by_x
    chances = xv + d.start_dropout  # times a customer with x repeat purchases could have dropped out
    can_drop = chances > 0
    a1 = gammaln(r + xv) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + chances) - gammaln(b) - gammaln(a + b + chances)
    log_a_over_b = np.where(can_drop, np.log(a) - np.log(np.where(can_drop, b + chances - 1.0, 1.0)), -np.inf)

    rx = r + d.x
    log_age, log_last = np.log(alpha + d.T), np.log(alpha + d.t_x)
    a3 = -rx * log_age
    a4 = log_a_over_b[d.x_index] - rx * log_last
    ll_rows = np.logaddexp(a3, a4)
    share = np.exp(a4 - ll_rows)  # weight of the "dropped out after t_x" branch; 0 when it cannot apply
    w_share = d.w * share
    w_share_by_x = np.bincount(d.x_index, weights=w_share, minlength=len(xv))

    total = wx.sum()
    ll = wx @ (a1 + a2) + d.w @ ll_rows
    d_r = wx @ (digamma(r + xv) - digamma(r) + np.log(alpha)) - d.w @ ((1.0 - share) * log_age + share * log_last)
    d_alpha = wx.sum() * r / alpha - (d.w * rx) @ ((1.0 - share) / (alpha + d.T) + share / (alpha + d.t_x))
    ab_x = digamma(a + b) - digamma(a + b + chances)
    d_a = wx @ ab_x + w_share.sum() / a
    d_b = wx @ (ab_x + digamma(b + chances) - digamma(b)) - w_share_by_x[can_drop] @ (
        1.0 / (b + chances[can_drop] - 1.0)
    )
    gradient = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return -ll / total, -gradient / total


def _bg_nbd_data(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, scale: float, start_dropout: int = 0
) -> _BgNbdData:
    (x, t_x, T), w = _collapse([x, t_x, T], w)
    x_values, x_index = np.unique(x, return_inverse=True)
    w_by_x = np.bincount(x_index, weights=w)
    return _BgNbdData(x, t_x / scale, T / scale, w, x_values, x_index, w_by_x, start_dropout)


def _beta_geometric_log_likelihood(
    params: BgNbdParams | MbgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> float:
    data = _bg_nbd_data(x.ravel(), t_x.ravel(), T.ravel(), np.ones(x.size), 1.0, _start_dropout(params))
    theta = np.log([params.r, params.alpha, params.a, params.b])
    return -float(_bg_nbd_terms(theta, data)[0]) * x.size


def bg_nbd_log_likelihood(params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> float:
    """Total BG/NBD log-likelihood (FHL 2005) of the given customers under params."""
    return _beta_geometric_log_likelihood(params, *_rft(frequency, recency, T))


def _fit_beta_geometric(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None, start_dropout: int
) -> tuple[float, float, float, float, float, int, bool]:
    """(r, alpha, a, b, log-likelihood, customers, converged) of the BG/NBD (0) or MBG/NBD (1)."""
    label = ("BG/NBD", "MBG/NBD")[start_dropout]
    x, t_x, age, w, scale = _fit_inputs(frequency, recency, T, weights, label)
    data = _bg_nbd_data(x, t_x, age, w, scale, start_dropout)
    mean_rate = (w @ x) / (w @ (age / scale))
    start = np.log([1.0, 1.0 / max(mean_rate, 1e-6), 1.0, 1.0])
    theta, converged = _minimize(_bg_nbd_terms, start, (data,))
    r, alpha_scaled, a, b = np.exp(theta)
    # The likelihood in scaled time differs from the one in original time by sum(w * x) * ln(scale).
    log_likelihood = -float(_bg_nbd_terms(theta, data)[0]) * w.sum() - (w @ x) * np.log(scale)
    return (
        float(r),
        float(alpha_scaled * scale),
        float(a),
        float(b),
        float(log_likelihood),
        int(round(w.sum())),
        converged,
    )


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
    return BgNbdParams(*_fit_beta_geometric(frequency, recency, T, weights, start_dropout=0))


def fit_mbg_nbd(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> MbgNbdParams:
    """Fit the MBG/NBD model (Batislam, Denizel & Filiztekin 2007) by maximum likelihood.

    As fit_bg_nbd, with the MBG/NBD likelihood: the customer may also drop out
    right after the first purchase. Same inputs, errors and fitting method.
    """
    return MbgNbdParams(*_fit_beta_geometric(frequency, recency, T, weights, start_dropout=1))


def _start_dropout(params: BgNbdParams | MbgNbdParams) -> int:
    return 1 if isinstance(params, MbgNbdParams) else 0


def _log_odds_dropped(params: BgNbdParams | MbgNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln(P(dropped) / P(alive)) given x, t_x, T.

    BG/NBD: ln(a / (b + x - 1)) + (r + x) ln((alpha + T) / (alpha + t_x)), -inf when x == 0.
    MBG/NBD: ln(a / (b + x)) + (r + x) ln((alpha + T) / (alpha + t_x)), for every x.
    """
    chances = x + _start_dropout(params)
    can_drop = chances > 0
    ratio = params.a / np.where(can_drop, params.b + chances - 1.0, 1.0)
    log_odds = np.log(ratio) + (params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + t_x))
    return np.where(can_drop, log_odds, -np.inf)


def _beta_geometric_purchases_if_alive(
    params: BgNbdParams | MbgNbdParams, t: np.ndarray, x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected purchases in (T, T + t] of a customer alive at T: FHL 2005 eq. 10 without its P(alive).

    (a + b' + x - 1) / (a - 1) * [1 - (1 - z)^(r+x) 2F1(r+x, b'+x; c; z)], with
    b' = b for the BG/NBD and b + 1 for the MBG/NBD (Wagner & Hoppe 2008): a
    customer alive after x purchases has survived x (BG/NBD) or x + 1 (MBG/NBD)
    chances to drop out, and p's posterior is Beta(a, b' + x) either way.
    The 2F1 term is rewritten by Euler's transformation:
    (1 - z)^(r+x) 2F1(r+x, b'+x; c; z) = (1 - z)^(a-1) 2F1(a+b'-1-r, a-1; c; z), with
    c = a + b' + x - 1 and z = t / (alpha + T + t). The left side overflows for
    large x; the right side's 2F1 tends to 1 as x grows.
    """
    r, alpha = params.r, params.alpha
    b = params.b + _start_dropout(params)
    a = params.a if abs(params.a - 1.0) > 1e-7 else 1.0 + 1e-7  # eq. 10 is 0/0 at a = 1; use the limit's neighbour
    c = a + b + x - 1.0
    one_minus_z = (alpha + T) / (alpha + T + t)
    transformed = one_minus_z ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, c, 1.0 - one_minus_z)
    return c / (a - 1.0) * (1.0 - transformed)


# --------------------------------------------------------------------------- Pareto/NBD


def _log_tail_integral(p: np.ndarray, q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """ln of J = integral over v in (0, inf) of (1 + (1 - z) v)^-p (1 + v)^-q dv, for 0 <= z < 1, p + q > 1.

    J = 2F1(1, p; p + q; z) / (p + q - 1), a hypergeometric function that lies
    between 1 and 1 / (1 - z). scipy's 2F1 returns inf for some large p with z
    near 1 (e.g. p = 174, q = 1.1, z = 1 - 4e-6); there the integral is taken
    numerically, over w = ln(1 + v).
    """
    p, q, z = np.broadcast_arrays(p, q, z)
    with np.errstate(over="ignore", invalid="ignore"):
        series = hyp2f1(1.0, p, p + q, z)
    bad = ~(np.isfinite(series) & (series >= 1.0 - 1e-12))
    # ndmin=1: a 0-d result would be a numpy scalar, whose .flat assignments are lost
    log_j = np.array(np.log(np.where(bad, 1.0, series)) - np.log(p + q - 1.0), ndmin=1)
    with np.errstate(over="ignore"):  # far out, e^w overflows and the integrand is 0, as it should be
        for i in np.flatnonzero(bad):
            args = (p.flat[i], q.flat[i], 1.0 - z.flat[i])
            log_j.flat[i] = np.log(quad(_tail_integrand, 0.0, np.inf, args=args, limit=200)[0])
    return log_j.reshape(p.shape)


def _tail_integrand(w: float, p: float, q: float, rho: float) -> float:
    """(1 + rho v)^-p (1 + v)^-q dv/dw at v = e^w - 1."""
    return float(np.exp(-p * np.log1p(rho * np.expm1(w)) - (q - 1.0) * w))


def _pareto_log_integral(r: float, alpha: float, s: float, beta: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ln I(y), I(y) = integral over u in (y, inf) of (alpha + u)^-(r + x) (beta + u)^-(s + 1) du.

    s * (I(t_x) - I(T)) is the Pareto/NBD's "dropped out between t_x and T"
    term, FHL 2005 note eqs. 19-20 (their A0 = (r + s + x) (I(t_x) - I(T))).
    Writing u = y + (m + y) v around the larger of alpha and beta, m, gives
    I(y) = (alpha + y)^-(r+x) (beta + y)^-s J(r+x, s+1, z) if alpha >= beta, and
    I(y) = (alpha + y)^-(r+x-1) (beta + y)^-(s+1) J(s+1, r+x, z) if alpha < beta,
    with z = |alpha - beta| / (m + y) and J from _log_tail_integral: the 2F1
    stays bounded and alpha == beta (z = 0, J = 1 / (r + s + x)) is no special case.
    """
    p, q = r + x, s + 1.0
    if alpha >= beta:
        z = (alpha - beta) / (alpha + y)
        return -p * np.log(alpha + y) - s * np.log(beta + y) + _log_tail_integral(p, q, z)
    z = (beta - alpha) / (beta + y)
    return -(p - 1.0) * np.log(alpha + y) - q * np.log(beta + y) + _log_tail_integral(q, p, z)


def _log1m_exp(value: np.ndarray) -> np.ndarray:
    """ln(1 - exp(value)) for value <= 0, accurate near 0 and far below it; -inf at 0."""
    value = np.minimum(value, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(value > -np.log(2.0), np.log(-np.expm1(value)), np.log1p(-np.exp(value)))


def _pareto_log_odds_dropped(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, pairs=None
) -> tuple[np.ndarray, np.ndarray]:
    """(ln of the alive term, ln of the dropped-out term) of the Pareto/NBD likelihood, without A1.

    alive = (alpha + T)^-(r + x) (beta + T)^-s, dropped = s (I(t_x) - I(T)) (see
    _pareto_log_integral). pairs, if given, are the distinct (x, t_x) and (x, T)
    with their inverse indices, so that I is evaluated once per distinct pair.
    """
    if pairs is None:
        log_last = _pareto_log_integral(r, alpha, s, beta, x, t_x)
        log_end = _pareto_log_integral(r, alpha, s, beta, x, T)
    else:
        (last_x, last_y, last_index), (end_x, end_y, end_index) = pairs
        log_last = _pareto_log_integral(r, alpha, s, beta, last_x, last_y)[last_index]
        log_end = _pareto_log_integral(r, alpha, s, beta, end_x, end_y)[end_index]
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    log_dropped = np.log(s) + log_last + _log1m_exp(log_end - log_last)
    return log_alive, log_dropped


@dataclass(frozen=True)
class _ParetoNbdData:
    x: np.ndarray  # per collapsed row
    t_x: np.ndarray
    T: np.ndarray
    w: np.ndarray
    x_values: np.ndarray  # distinct frequencies
    x_index: np.ndarray  # row -> position in x_values
    w_by_x: np.ndarray  # total weight per distinct frequency
    #: Distinct (x, t_x) and (x, T) pairs and each row's position among them.
    pairs: tuple


def _distinct_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (x, y) pairs and each row's position among them (codes packed as in _collapse)."""
    _, x_code = np.unique(x, return_inverse=True)
    y_values, y_code = np.unique(y, return_inverse=True)
    _, first, index = np.unique(x_code * len(y_values) + y_code, return_index=True, return_inverse=True)
    return x[first], y[first], index


def _pareto_nbd_data(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, scale: float) -> _ParetoNbdData:
    (x, t_x, T), w = _collapse([x, t_x, T], w)
    t_x, T = t_x / scale, T / scale
    x_values, x_index = np.unique(x, return_inverse=True)
    w_by_x = np.bincount(x_index, weights=w)
    return _ParetoNbdData(x, t_x, T, w, x_values, x_index, w_by_x, (_distinct_pairs(x, t_x), _distinct_pairs(x, T)))


def _pareto_nbd_mean_log_likelihood(theta: np.ndarray, d: _ParetoNbdData) -> float:
    """Mean Pareto/NBD log-likelihood (FHL 2005 note, eq. 18): A1 + ln(alive + dropped).

    A1 = lnG(r + x) - lnG(r) + r ln(alpha) + s ln(beta), once per distinct x.
    """
    r, alpha, s, beta = np.exp(theta)
    a1 = gammaln(r + d.x_values) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    log_alive, log_dropped = _pareto_log_odds_dropped(r, alpha, s, beta, d.x, d.t_x, d.T, d.pairs)
    return float((d.w_by_x @ a1 + d.w @ np.logaddexp(log_alive, log_dropped)) / d.w_by_x.sum())


def _pareto_nbd_terms(theta: np.ndarray, d: _ParetoNbdData) -> tuple[float, np.ndarray]:
    """Mean negative Pareto/NBD log-likelihood and its gradient in log-parameters by central differences.

    The derivatives of the 2F1 in its parameters have no closed form; the
    function is smooth, so central differences are accurate to about 1e-10.
    """
    gradient = np.empty(len(theta))
    for i in range(len(theta)):
        step = np.zeros(len(theta))
        step[i] = _DIFFERENCE_STEP
        ahead = _pareto_nbd_mean_log_likelihood(theta + step, d)
        behind = _pareto_nbd_mean_log_likelihood(theta - step, d)
        gradient[i] = (ahead - behind) / (2.0 * _DIFFERENCE_STEP)
    return -_pareto_nbd_mean_log_likelihood(theta, d), -gradient


def fit_pareto_nbd(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> ParetoNbdParams:
    """Fit the Pareto/NBD model (Schmittlein, Morrison & Colombo 1987) by maximum likelihood.

    Same inputs, scaling, collapsing and errors as fit_bg_nbd; the
    log-likelihood (FHL 2005 note, eq. 18) is maximised over
    log(r, alpha, s, beta) by L-BFGS-B with a central-difference gradient.
    alpha and beta come back in the data's time unit.
    """
    x, t_x, age, w, scale = _fit_inputs(frequency, recency, T, weights, "Pareto/NBD")
    data = _pareto_nbd_data(x, t_x, age, w, scale)
    mean_rate = (w @ x) / (w @ (age / scale))
    # Start with lifetimes of mean beta / (s - 1) ~ the longest observed age (10 in scaled time).
    start = np.log([1.0, 1.0 / max(mean_rate, 1e-6), 2.0, 10.0])
    theta, converged = _minimize(_pareto_nbd_terms, start, (data,))
    r, alpha_scaled, s, beta_scaled = np.exp(theta)
    # As for the BG/NBD, scaled time shifts the log-likelihood by sum(w * x) * ln(scale).
    log_likelihood = _pareto_nbd_mean_log_likelihood(theta, data) * w.sum() - (w @ x) * np.log(scale)
    return ParetoNbdParams(
        r=float(r),
        alpha=float(alpha_scaled * scale),
        s=float(s),
        beta=float(beta_scaled * scale),
        log_likelihood=float(log_likelihood),
        n_customers=int(round(w.sum())),
        converged=converged,
    )


def _pareto_purchases_if_alive(params: ParetoNbdParams, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Expected purchases in (T, T + t] of a customer alive at T (FHL 2005 note, eq. 41 without P(alive)).

    (r + x) / (alpha + T) * (beta + T) / (s - 1) * [1 - ((beta + T) / (beta + T + t))^(s - 1)]:
    the posterior purchase rate times the expected time alive within t. The
    bracket over (s - 1) is -expm1(-(s - 1) L) / (s - 1) with L = ln((beta + T + t) / (beta + T)),
    which tends to L as s tends to 1.
    """
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    log_ratio = np.log1p(t / (beta + T))
    if abs(s - 1.0) > 1e-10:
        time_alive = -np.expm1(-(s - 1.0) * log_ratio) / (s - 1.0)
    else:
        time_alive = log_ratio
    return (r + x) / (alpha + T) * (beta + T) * time_alive


def _pareto_log_likelihood(params: ParetoNbdParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> float:
    theta = np.log([params.r, params.alpha, params.s, params.beta])
    data = _pareto_nbd_data(x.ravel(), t_x.ravel(), T.ravel(), np.ones(x.size), 1.0)
    return _pareto_nbd_mean_log_likelihood(theta, data) * x.size


# --------------------------------------------------------------------------- any purchase model


_FITS = {"bg_nbd": fit_bg_nbd, "mbg_nbd": fit_mbg_nbd, "pareto_nbd": fit_pareto_nbd}


def fit_model(
    name: str, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> PurchaseModelParams:
    """Fit the purchase model called `name` ("bg_nbd", "mbg_nbd" or "pareto_nbd"; see MODEL_NAMES).

    Same inputs and errors as fit_bg_nbd; an unknown name is a DataValidationError.
    """
    if name not in _FITS:
        raise DataValidationError(f"unknown purchase model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    return _FITS[name](frequency, recency, T, weights)


def _p_alive(params: PurchaseModelParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    if isinstance(params, ParetoNbdParams):
        log_alive, log_dropped = _pareto_log_odds_dropped(params.r, params.alpha, params.s, params.beta, x, t_x, T)
        log_odds = log_dropped - log_alive
    else:
        log_odds = _log_odds_dropped(params, x, t_x, T)
    return np.exp(-np.logaddexp(0.0, log_odds))


def _purchases_if_alive(params: PurchaseModelParams, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    if isinstance(params, ParetoNbdParams):
        return _pareto_purchases_if_alive(params, t, x, T)
    return _beta_geometric_purchases_if_alive(params, t, x, T)


def _expected_purchases(params: PurchaseModelParams, t: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    return _purchases_if_alive(params, t, x, T) * _p_alive(params, x, t_x, T)


def log_likelihood(params: PurchaseModelParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> float:
    """Total log-likelihood of the given customers under a fitted purchase model (any of MODEL_NAMES)."""
    x, t_x, age = _rft(frequency, recency, T)
    if isinstance(params, ParetoNbdParams):
        return _pareto_log_likelihood(params, x, t_x, age)
    return _beta_geometric_log_likelihood(params, x, t_x, age)


def probability_alive(
    params: PurchaseModelParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """P(alive | x, t_x, T): the chance that a customer with this history has not dropped out by T.

    BG/NBD (Fader, Hardie & Lee, "Computing P(alive) Using the BG/NBD Model"):
    P = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x));
    exactly 1 for a customer with no repeat purchase.
    MBG/NBD (Batislam et al. 2007, appendix eq. 5):
    P = 1 / (1 + a / (b + x) ((alpha + T) / (alpha + t_x))^(r + x)); a one-time
    buyer's falls as T grows.
    Pareto/NBD (FHL 2005 note, eqs. 36-37): P = alive / (alive + dropped), the
    two terms of its likelihood (see _pareto_log_odds_dropped).
    All are evaluated as exp(-logaddexp(0, ln(dropped / alive))) so that they cannot overflow.
    """
    return _p_alive(params, *_rft(frequency, recency, T))


def expected_purchases(
    params: PurchaseModelParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: a customer's expected purchases in the next t time units.

    BG/NBD (FHL 2005, eq. 10):
    E = (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
        * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P(alive | x, t_x, T).
    MBG/NBD (Wagner & Hoppe 2008): the same with b + 1 in place of b, times the MBG/NBD's P(alive).
    Pareto/NBD (FHL 2005 note, eq. 41):
    E = (r + x) (beta + T) / ((alpha + T) (s - 1)) [1 - ((beta + T) / (beta + T + t))^(s - 1)] P(alive).
    t may be a scalar or an array broadcastable against the customers'.
    """
    x, t_x, age = _rft(frequency, recency, T)
    return _expected_purchases(params, _array("t", t), x, t_x, age)


def expected_purchases_unconditional(params: PurchaseModelParams, t: ArrayLike) -> np.ndarray:
    """E[X(t)]: expected repeat purchases in the first t time units after a new customer's first purchase.

    This is E[Y(t) | x = 0, t_x = 0, T = 0]: for the BG/NBD FHL 2005 eq. 9,
    (a + b - 1) / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b; a + b - 1; t / (alpha + t))];
    for the MBG/NBD b / (a - 1) [1 - (alpha / (alpha + t))^r 2F1(r, b + 1; a + b; t / (alpha + t))];
    for the Pareto/NBD r beta / (alpha (s - 1)) [1 - (beta / (beta + t))^(s - 1)] (FHL 2005 note, eq. 27).
    Summed over customers by their first-purchase day it gives the cohort's expected
    cumulative repeat purchases (the "tracking" curve).
    """
    t = _array("t", t)
    zero = np.zeros_like(t)
    return _expected_purchases(params, t, zero, zero, zero)


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
    model: PurchaseModelParams,
    gg: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon: float,
    discount_rate_per_period: float = 0.0,
    period: float = 1.0,
) -> np.ndarray:
    """Expected value of each customer's purchases over the next `horizon` time units.

    CLV = sum over periods k = 1 .. ceil(horizon / period) of
          (E[Y(k period) | x, t_x, T] - E[Y((k - 1) period) | x, t_x, T]) * E[M | x, m] / (1 + d)^k,
    where `period` is the length of a discounting period in the purchase
    model's time unit (one unit unless given; the last period is cut at
    horizon), E[Y] is expected_purchases under any of the purchase models, E[M]
    is expected_average_spend and d is discount_rate_per_period; purchases in
    period k are discounted to now from the period's end. With d = 0 this is
    E[Y(horizon)] * E[M]. The purchase and spend models are taken as
    independent, as the Gamma-Gamma model assumes. Discounting costs one
    evaluation of the purchase curve per period (P(alive) is computed once).
    """
    x, t_x, age = _rft(frequency, recency, T)
    spend = _expected_average_spend(gg, *_spend_inputs(frequency, monetary_value))
    _same_shape(frequency=x, monetary_value=spend)
    horizon = float(_array("horizon", horizon))
    rate = float(_array("discount_rate_per_period", discount_rate_per_period))
    period = float(_array("period", period))
    if period <= 0:
        raise DataValidationError(f"period must be a positive length of time, got {period}")
    alive = _p_alive(model, x, t_x, age)
    if rate == 0.0:
        return _purchases_if_alive(model, np.asarray(horizon), x, age) * alive * spend
    ends = np.minimum(np.arange(1, int(np.ceil(horizon / period)) + 1, dtype=float) * period, horizon)
    discounted, before = np.zeros_like(x), np.zeros_like(x)
    for k, end in enumerate(ends, start=1):
        cumulative = _purchases_if_alive(model, np.asarray(end), x, age) * alive
        discounted += (cumulative - before) / (1.0 + rate) ** k
        before = cumulative
    return discounted * spend


def discounted_customer_lifetime_value(
    model: PurchaseModelParams,
    gg: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon_days: float = 365.0,
    annual_discount_rate: float = 0.10,
    days_per_time_unit: float = 1.0,
    periods_per_year: int = 12,
) -> np.ndarray:
    """Each customer's expected spend over the next `horizon_days`, in today's money.

    The horizon is cut into periods_per_year steps a year (monthly by
    default); each step's expected purchases (the growth of the cumulative
    expected purchases over the step) are discounted from the step's end at
    the per-step rate equivalent to annual_discount_rate,
    (1 + annual rate)^(1 / periods_per_year) - 1, and multiplied by the
    expected spend per purchase. days_per_time_unit is the length in days of
    the purchase model's time unit (1 for models fitted in days, 7 in weeks).
    This is customer_lifetime_value with those periods and that rate.
    """
    if days_per_time_unit <= 0 or periods_per_year < 1:
        raise DataValidationError(
            f"days_per_time_unit must be positive and periods_per_year at least 1, "
            f"got {days_per_time_unit} and {periods_per_year}"
        )
    if annual_discount_rate < 0:
        raise DataValidationError(f"annual_discount_rate must not be negative, got {annual_discount_rate}")
    period = 365.25 / periods_per_year / days_per_time_unit
    rate = (1.0 + annual_discount_rate) ** (1.0 / periods_per_year) - 1.0
    horizon = float(_array("horizon_days", horizon_days)) / days_per_time_unit
    return customer_lifetime_value(model, gg, frequency, recency, T, monetary_value, horizon, rate, period)
