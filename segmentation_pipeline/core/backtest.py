"""Holdout backtest: which churn and CLV model predicts this data's own future best?

The transaction history is cut at a split day. Everything up to and including
the split day is the calibration period; the H days after it, (split, split + H],
are the holdout. Every candidate purchase model (core.clv: BG/NBD, MBG/NBD,
Pareto/NBD) is fitted on the calibration period alone and asked what each
customer will do in the holdout; the answers are scored against what the
customers then did.

Customers and time are those of the profiles: a transaction is a purchase
*day* (a customer's purchases of one day count once, their amounts summed),
time is in days, and only customers whose first purchase day is on or before
the split day are scored (customers who arrive in the holdout have no history
to predict from). For each of them the calibration period gives

* x   = purchase days after the first one (repeat purchase days),
* t_x = days from the first to the last purchase day,
* T   = days from the first purchase day to the split day,
* the mean value of the repeat purchase days (0 without one),

and the holdout gives the actual purchase days and spend.

Scores per model:

* forecast vs actual total of holdout purchase days (% error), and the mean
  absolute error per customer (MAE);
* churn AUC: how well 1 - P(alive at the split) ranks the customers who then
  bought nothing in the holdout above those who bought (0.5 is chance, 1 perfect);
  and the same with fewer forecast purchases as the score, which also weighs
  how often a live customer buys;
* by calibration frequency x = 0, 1, ..., 7+: mean actual vs mean forecast
  holdout purchase days (Fader, Hardie & Lee 2005, figure 4);
* holdout spend: forecast purchase days x Gamma-Gamma expected spend vs actual.

Baselines, scored the same way:

* "recency": days since the last purchase as the churn score; the forecast is
  the naive run-rate, repeat purchase days per day since the first purchase x H;
* "heuristic": the churn risk the profiles use without a model
  (core.profiles.heuristic_churn_and_clv), with days as the profiles count them
  from a purchase log (silence T - t_x + 1, tenure T + 1, active days x + 1);
  its forecast is the same function's run-rate with purchase days in place of
  revenue.

The tracking table is the cohort's cumulative repeat purchase days, actual vs
each model's expectation, day by day over calibration and holdout: the
unconditional E[X(t)] of every customer summed from their first purchase day.

Choosing the model (MODEL_CHOICE_RULE): among the models whose fit converged,
the lowest holdout MAE; models within 1% of that MAE count as tied, and the
tie goes to the higher churn AUC.

If the history is shorter than twice H, the holdout becomes the last half of
the history; a split day too close to the end shortens the holdout to the data
there is. Both are said in `notes`. A model that cannot be fitted is reported
with the reason; if none can, the result says so and chooses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from . import clv
from .errors import DataValidationError, InsufficientDataError
from .profiles import ProfileSettings, heuristic_churn_and_clv
from .schemas import CLV_BACKTEST, MERGE_MAP, RAW_EVENTS
from .warehouse import Warehouse, days_between, sql_string

#: Relative margin within which two models' holdout MAE count as equal.
MAE_TIE_MARGIN = 0.01
MODEL_CHOICE_RULE = (
    "lowest mean absolute error of holdout purchase days per customer among the models whose fit converged; "
    f"models within {MAE_TIE_MARGIN:.0%} of that error are tied, and the tie goes to the higher churn AUC"
)
#: Calibration frequencies shown one by one in the calibration table; higher ones are pooled as "7+".
CALIBRATION_FREQUENCIES = 7

_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class ModelBacktest:
    """One candidate model's holdout scores; metrics are NaN where the model could not be fitted."""

    model: str
    label: str
    converged: bool
    parameters: dict[str, float]
    log_likelihood: float
    #: Holdout purchase days: sum over customers of the forecast, and of what happened.
    forecast_total: float
    actual_total: float
    #: 100 * (forecast - actual) / actual.
    percent_error: float
    #: Mean absolute error of the holdout purchase days per customer.
    mae: float
    #: Churn AUC of 1 - P(alive) for "no purchase in the holdout".
    auc: float
    #: Churn AUC of the same outcome scored by fewer forecast holdout purchase days: P(alive) alone
    #: ignores how often a live customer buys.
    auc_by_forecast: float = math.nan
    #: Holdout spend: forecast purchase days x Gamma-Gamma expected spend, and the actual spend.
    forecast_spend_total: float = math.nan
    actual_spend_total: float = math.nan
    note: str = ""


@dataclass(frozen=True)
class BaselineBacktest:
    """A model-free benchmark scored like the models."""

    baseline: str
    description: str
    forecast_total: float
    actual_total: float
    percent_error: float
    mae: float
    auc: float


@dataclass(frozen=True)
class BacktestResult:
    """The backtest of every candidate model, the baselines, and the model chosen."""

    split_day: date | None
    holdout_days: int
    requested_holdout_days: int
    first_day: date | None
    last_day: date | None
    #: Customers in the data; scored (first purchase on or before the split day); first seen in the holdout.
    customers_total: int
    customers: int
    new_in_holdout: int
    #: Scored customers with a repeat purchase day in the calibration period; with a purchase day in the holdout.
    repeat_customers: int
    holdout_buyers: int
    calibration_purchase_days: int
    holdout_purchase_days: int
    models: tuple[ModelBacktest, ...]
    baselines: tuple[BaselineBacktest, ...]
    #: Mean actual vs forecast holdout purchase days by calibration frequency (0 .. 6, "7+").
    calibration: pd.DataFrame
    #: Cumulative repeat purchase days of the scored customers, actual and per model, one row per day.
    tracking: pd.DataFrame
    #: One row per scored customer: x, t_x, T, repeat value, holdout actuals, and each model's forecast and P(alive).
    customer_table: pd.DataFrame
    chosen_model: str | None
    reason: str
    notes: tuple[str, ...] = field(default=())

    def model_table(self) -> pd.DataFrame:
        """The per-model rows as a table, one row per candidate model."""
        return pd.DataFrame([vars(row) for row in self.models])

    def baseline_table(self) -> pd.DataFrame:
        """The baseline rows as a table."""
        return pd.DataFrame([vars(row) for row in self.baselines])


# --------------------------------------------------------------------------- input


def purchase_days(
    purchases: pa.Table | pd.DataFrame,
    customer_column: str = "canonical_id",
    day_column: str = "day",
    amount_column: str = "amount",
) -> pd.DataFrame:
    """One row per customer and purchase day: customer (str), day (int, days since 1970-01-01), amount (summed).

    Rows of one customer on one day are added up. Raises DataValidationError
    for a missing column, a missing customer or day, an unreadable day or a
    missing amount.
    """
    frame = purchases.to_pandas() if isinstance(purchases, pa.Table) else purchases
    missing = [name for name in (customer_column, day_column, amount_column) if name not in frame.columns]
    if missing:
        raise DataValidationError(
            f"purchase records lack the column(s) {', '.join(missing)}; "
            f"expected {customer_column} (customer), {day_column} (purchase day) and {amount_column} (net amount), "
            f"found {', '.join(map(str, frame.columns))}"
        )
    for name in (customer_column, day_column, amount_column):
        empty = int(frame[name].isna().sum())
        if empty:
            raise DataValidationError(f"purchase records: {empty} row(s) have no {name}")
    try:
        days = pd.to_datetime(frame[day_column])
    except (ValueError, TypeError) as error:
        raise DataValidationError(
            f"purchase records: column {day_column} holds values that are not dates: {error}"
        ) from error
    if getattr(days.dt, "tz", None) is not None:
        days = days.dt.tz_convert("UTC").dt.tz_localize(None)
    try:
        amounts = pd.to_numeric(frame[amount_column]).astype(float)
    except (ValueError, TypeError) as error:
        raise DataValidationError(
            f"purchase records: column {amount_column} holds values that are not numbers: {error}"
        ) from error
    day_numbers = (days.to_numpy().astype("datetime64[D]") - _EPOCH).astype(np.int64)
    daily = (
        pd.DataFrame({"customer": frame[customer_column].astype(str).to_numpy(), "day": day_numbers, "amount": amounts})
        .groupby(["customer", "day"], as_index=False, sort=True)["amount"]
        .sum()
    )
    return daily


def _to_date(day_number: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(day_number))


def _to_day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def customer_statistics(daily: pd.DataFrame, split: int, holdout_days: int) -> pd.DataFrame:
    """Calibration statistics and holdout actuals of the customers whose first purchase day is <= split.

    daily: purchase_days() output. Columns: customer, first_day, x, t_x, T, repeat_value,
    calibration_spend, holdout_purchase_days, holdout_spend; days are day numbers and lengths in days.
    """
    first = daily.groupby("customer", sort=True)["day"].min()
    cohort = first.index[first.to_numpy() <= split]
    rows = daily[daily["customer"].isin(cohort)]
    calibration = rows[rows["day"] <= split]
    holdout = rows[(rows["day"] > split) & (rows["day"] <= split + holdout_days)]
    grouped = calibration.groupby("customer", sort=True)
    stats = pd.DataFrame(
        {
            "first_day": grouped["day"].min(),
            "purchase_days": grouped["day"].size(),
            "last_day": grouped["day"].max(),
            "calibration_spend": grouped["amount"].sum(),
            "first_day_amount": grouped["amount"].first(),  # rows are sorted by day
        }
    )
    stats["x"] = (stats["purchase_days"] - 1).astype(float)
    stats["t_x"] = (stats["last_day"] - stats["first_day"]).astype(float)
    stats["T"] = (split - stats["first_day"]).astype(float)
    repeat = stats["x"] > 0
    stats["repeat_value"] = np.where(
        repeat, (stats["calibration_spend"] - stats["first_day_amount"]) / stats["x"].where(repeat, 1.0), 0.0
    )
    by_customer = holdout.groupby("customer", sort=True)
    stats["holdout_purchase_days"] = by_customer["day"].size().reindex(stats.index, fill_value=0).astype(float)
    stats["holdout_spend"] = by_customer["amount"].sum().reindex(stats.index, fill_value=0.0)
    columns = ["first_day", "x", "t_x", "T", "repeat_value", "calibration_spend", "holdout_purchase_days"]
    return stats[[*columns, "holdout_spend"]].reset_index()


# --------------------------------------------------------------------------- metrics


def churn_auc(churned: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` for the outcome `churned`; NaN if only one outcome occurs."""
    churned = np.asarray(churned, dtype=bool)
    score = np.asarray(score, dtype=float)
    if churned.all() or not churned.any() or not np.isfinite(score).all():
        return math.nan
    return float(roc_auc_score(churned, score))


def _percent_error(forecast: float, actual: float) -> float:
    return 100.0 * (forecast - actual) / actual if actual > 0 else math.nan


def _calibration_table(stats: pd.DataFrame, forecasts: dict[str, np.ndarray]) -> pd.DataFrame:
    group = np.minimum(stats["x"].to_numpy(), CALIBRATION_FREQUENCIES).astype(int)
    labels = [str(k) for k in range(CALIBRATION_FREQUENCIES)] + [f"{CALIBRATION_FREQUENCIES}+"]
    table = pd.DataFrame({"group": group, "actual": stats["holdout_purchase_days"].to_numpy()})
    for name, forecast in forecasts.items():
        table[name] = forecast
    summary = table.groupby("group").agg(customers=("actual", "size"), **{c: (c, "mean") for c in table.columns[1:]})
    summary = summary.reindex(range(CALIBRATION_FREQUENCIES + 1))
    summary["customers"] = summary["customers"].fillna(0).astype(int)
    summary.insert(0, "frequency", labels)
    return summary.reset_index(drop=True)


def _tracking_table(
    daily: pd.DataFrame,
    stats: pd.DataFrame,
    start: int,
    split: int,
    end: int,
    fits: dict[str, clv.PurchaseModelParams],
) -> pd.DataFrame:
    """Cumulative repeat purchase days of the scored customers per day, actual and expected by each model."""
    n_days = end - start + 1
    cohort = daily[daily["customer"].isin(stats["customer"])]
    first = cohort.groupby("customer")["day"].transform("min")
    repeat_days = cohort.loc[(cohort["day"] > first) & (cohort["day"] <= end), "day"].to_numpy()
    actual = np.cumsum(np.bincount(repeat_days - start, minlength=n_days))
    table = pd.DataFrame(
        {
            "day": [_to_date(start + k) for k in range(n_days)],
            "period": np.where(np.arange(start, end + 1) <= split, "calibration", "holdout"),
            "actual": actual.astype(float),
        }
    )
    arrivals = np.bincount(stats["first_day"].to_numpy() - start, minlength=n_days)
    for name, params in fits.items():
        curve = clv.expected_purchases_unconditional(params, np.arange(n_days, dtype=float))
        table[name] = np.convolve(arrivals, curve)[:n_days]
    return table


# --------------------------------------------------------------------------- backtest


def _holdout_window(
    first_day: int, last_day: int, split_day: int | None, holdout_days: int
) -> tuple[int, int, list[str]]:
    """(split, holdout days, notes): the requested window, or the longest the data allows."""
    history = last_day - first_day + 1
    notes = []
    if history < 2 * holdout_days:
        shortened = history // 2
        notes.append(
            f"The purchase history covers {history} days, less than twice the {holdout_days}-day holdout asked for: "
            f"the models were tested on the last {shortened} days instead (half the history)."
        )
        return last_day - shortened, shortened, notes
    split = last_day - holdout_days if split_day is None else split_day
    if split + holdout_days > last_day:
        shortened = max(last_day - split, 0)
        notes.append(
            f"The data ends {shortened} days after the split day {_to_date(split)}: the holdout is {shortened} days, "
            f"not the {holdout_days} asked for."
        )
        return split, shortened, notes
    return split, holdout_days, notes


def _fit(name: str, stats: pd.DataFrame) -> tuple[clv.PurchaseModelParams | None, str]:
    try:
        params = clv.fit_model(name, stats["x"], stats["t_x"], stats["T"])
    except InsufficientDataError as error:
        return None, f"could not be fitted: {error}"
    return params, "" if params.converged else "the fit did not converge"


def _fit_spend(stats: pd.DataFrame) -> clv.GammaGammaParams | None:
    spenders = (stats["x"] > 0) & (stats["repeat_value"] > 0)
    try:
        spend = clv.fit_gamma_gamma(stats["x"][spenders], stats["repeat_value"][spenders])
    except InsufficientDataError:
        return None
    return spend if spend.converged and spend.q > 1 else None


def _model_row(
    name: str,
    params: clv.PurchaseModelParams | None,
    note: str,
    stats: pd.DataFrame,
    holdout_days: int,
    spend: clv.GammaGammaParams | None,
) -> tuple[ModelBacktest, np.ndarray | None, np.ndarray | None]:
    actual = stats["holdout_purchase_days"].to_numpy()
    actual_spend = float(stats["holdout_spend"].sum())
    label = clv.MODEL_LABELS[name]
    if params is None:
        nan = math.nan
        row = ModelBacktest(
            model=name,
            label=label,
            converged=False,
            parameters={},
            log_likelihood=nan,
            forecast_total=nan,
            actual_total=float(actual.sum()),
            percent_error=nan,
            mae=nan,
            auc=nan,
            actual_spend_total=actual_spend,
            note=note,
        )
        return row, None, None
    x, t_x, age = (stats[column].to_numpy() for column in ("x", "t_x", "T"))
    with np.errstate(invalid="ignore", over="ignore"):
        forecast = clv.expected_purchases(params, float(holdout_days), x, t_x, age)
        p_alive = clv.probability_alive(params, x, t_x, age)
    finite = np.isfinite(forecast).all() and np.isfinite(p_alive).all()
    if not finite:
        note = "; ".join(filter(None, [note, "its forecasts are not finite numbers"]))
    forecast_spend = math.nan
    if spend is not None and finite:
        # A customer whose repeat days were free or refunded says nothing about spend: the population's applies.
        spending = stats["repeat_value"].to_numpy() > 0
        per_day = clv.expected_average_spend(
            spend, np.where(spending, x, 0), np.where(spending, stats["repeat_value"], 0)
        )
        forecast_spend = float(forecast @ per_day)
    churned = actual == 0
    row = ModelBacktest(
        model=name,
        label=label,
        converged=params.converged,
        parameters=params.parameters,
        log_likelihood=params.log_likelihood,
        forecast_total=float(forecast.sum()) if finite else math.nan,
        actual_total=float(actual.sum()),
        percent_error=_percent_error(float(forecast.sum()), float(actual.sum())) if finite else math.nan,
        mae=float(np.mean(np.abs(forecast - actual))) if finite else math.nan,
        auc=churn_auc(churned, 1.0 - p_alive) if finite else math.nan,
        auc_by_forecast=churn_auc(churned, -forecast) if finite else math.nan,
        forecast_spend_total=forecast_spend,
        actual_spend_total=actual_spend,
        note=note,
    )
    return row, (forecast if finite else None), (p_alive if finite else None)


def _baselines(stats: pd.DataFrame, holdout_days: int) -> tuple[BaselineBacktest, ...]:
    x, t_x, age = (stats[column].to_numpy() for column in ("x", "t_x", "T"))
    actual = stats["holdout_purchase_days"].to_numpy()
    churned = actual == 0
    silence = age - t_x
    run_rate = np.divide(x, age, out=np.zeros_like(x), where=age > 0) * holdout_days
    settings = ProfileSettings(clv_horizon_days=max(holdout_days, 1))
    # The profiles' clocks run to the end of the as-of day: a purchase on the split day is 1 day old.
    churn_risk, heuristic_days = heuristic_churn_and_clv(silence + 1.0, age + 1.0, x + 1.0, x + 1.0, settings)
    rows = []
    for name, description, forecast, score in [
        (
            "recency",
            "days since the last purchase as churn score; repeat purchase days per day since the first purchase x holdout days",
            run_rate,
            silence,
        ),
        (
            "heuristic",
            "the profiles' model-free churn risk and run-rate (core.profiles.heuristic_churn_and_clv), in purchase days",
            heuristic_days,
            churn_risk,
        ),
    ]:
        rows.append(
            BaselineBacktest(
                baseline=name,
                description=description,
                forecast_total=float(forecast.sum()),
                actual_total=float(actual.sum()),
                percent_error=_percent_error(float(forecast.sum()), float(actual.sum())),
                mae=float(np.mean(np.abs(forecast - actual))),
                auc=churn_auc(churned, score),
            )
        )
    return tuple(rows)


def choose_model(
    models: Sequence[ModelBacktest], baselines: Sequence[BaselineBacktest] = (), holdout_days: int = 0
) -> tuple[str | None, str]:
    """The model MODEL_CHOICE_RULE picks (None if no model qualifies), and why, in words a marketer can read."""
    eligible = [row for row in models if row.converged and math.isfinite(row.mae)]
    if not eligible:
        reasons = "; ".join(f"{row.label} {row.note}" for row in models if row.note) or "no model was fitted"
        return (
            None,
            f"No purchase model could be tested on this data ({reasons}); the simple rule of thumb stays in use.",
        )
    best_mae = min(row.mae for row in eligible)
    tied = [row for row in eligible if row.mae <= best_mae * (1.0 + MAE_TIE_MARGIN)]
    chosen = max(tied, key=lambda row: (row.auc if math.isfinite(row.auc) else -1.0, -row.mae))
    window = f"over the last {holdout_days} days" if holdout_days else "over the holdout"
    others = sorted((row for row in eligible if row is not chosen), key=lambda row: row.mae)
    if len(tied) > 1:
        group = [chosen, *(row for row in tied if row is not chosen)]
        names = _in_words([row.label for row in group])
        errors = _in_words([f"{row.mae:.2f} ({row.label})" for row in group])
        sentences = [
            f"{names} forecast equally well (within {MAE_TIE_MARGIN:.0%}) how often each customer buys: "
            f"{window} they were off by {errors} purchase days per customer on average.",
            f"{chosen.label} is used because it tells better who is about to stop buying.",
        ]
    else:
        runner_up = f" (next best, {others[0].label}: {others[0].mae:.2f})" if others else ""
        sentences = [
            f"{chosen.label} forecast most closely how often each customer buys: {window} it was off by "
            f"{chosen.mae:.2f} purchase days per customer on average{runner_up}."
        ]
    if math.isfinite(chosen.auc):
        sentences.append(
            f"It rated a customer who then stopped buying as more at risk than one who kept buying "
            f"{chosen.auc:.0%} of the time."
        )
    closer = [row for row in baselines if math.isfinite(row.mae) and row.mae < chosen.mae]
    if closer:
        sentences.append(
            f"The simple {closer[0].baseline} rule of thumb was closer still ({closer[0].mae:.2f}): "
            "treat the model's forecasts with care."
        )
    return chosen.model, " ".join(sentences)


def _in_words(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _empty_result(
    requested: int, holdout_days: int, split: int | None, first: int | None, last: int | None, reason: str, notes
) -> BacktestResult:
    return BacktestResult(
        split_day=None if split is None else _to_date(split),
        holdout_days=holdout_days,
        requested_holdout_days=requested,
        first_day=None if first is None else _to_date(first),
        last_day=None if last is None else _to_date(last),
        customers_total=0,
        customers=0,
        new_in_holdout=0,
        repeat_customers=0,
        holdout_buyers=0,
        calibration_purchase_days=0,
        holdout_purchase_days=0,
        models=(),
        baselines=(),
        calibration=pd.DataFrame(),
        tracking=pd.DataFrame(),
        customer_table=pd.DataFrame(),
        chosen_model=None,
        reason=reason,
        notes=tuple(notes),
    )


def backtest_purchase_models(
    purchases: pa.Table | pd.DataFrame,
    holdout_days: int,
    split_day: date | None = None,
    *,
    last_day: date | None = None,
    models: Sequence[str] = clv.MODEL_NAMES,
    customer_column: str = "canonical_id",
    day_column: str = "day",
    amount_column: str = "amount",
) -> BacktestResult:
    """Fit each model on the purchases up to split_day and score its forecasts of the next holdout_days.

    purchases: one row per customer and purchase day (several rows of one day
    are added up) with the customer's canonical ID, the day and the day's net
    amount. split_day: the last day of the calibration period; by default
    holdout_days before last_day. last_day: the end of the observed history; by
    default the last purchase day. See the module docstring for what is scored
    and how the model is chosen. Raises DataValidationError for unusable input;
    too little data is a result that says so, never an exception.
    """
    if holdout_days < 1:
        raise DataValidationError(f"holdout_days must be at least 1, got {holdout_days}")
    unknown = [name for name in models if name not in clv.MODEL_NAMES]
    if unknown:
        raise DataValidationError(f"unknown purchase model(s) {unknown}: choose from {', '.join(clv.MODEL_NAMES)}")
    daily = purchase_days(purchases, customer_column, day_column, amount_column)
    if daily.empty:
        return _empty_result(holdout_days, 0, None, None, None, "There are no purchases to test the models on.", [])
    first = int(daily["day"].min())
    last = int(daily["day"].max()) if last_day is None else _to_day_number(last_day)
    requested_split = None if split_day is None else _to_day_number(split_day)
    split, window, notes = _holdout_window(first, last, requested_split, holdout_days)
    if window < 1:
        reason = "There is no holdout period after the split day to test the models on."
        return _empty_result(holdout_days, window, split, first, last, reason, notes)

    stats = customer_statistics(daily, split, window)
    fits: dict[str, clv.PurchaseModelParams] = {}
    rows, forecasts, table = [], {}, stats.copy()
    spend = _fit_spend(stats) if len(stats) else None
    for name in models:
        if len(stats) == 0:
            params, note = None, "could not be fitted: no customer bought on or before the split day"
        else:
            params, note = _fit(name, stats)
        row, forecast, p_alive = _model_row(name, params, note, stats, window, spend)
        rows.append(row)
        if forecast is not None:
            fits[name] = params
            forecasts[name] = forecast
            table[f"{name}_forecast"] = forecast
            table[f"{name}_p_alive"] = p_alive
    baselines = _baselines(stats, window) if len(stats) else ()
    chosen, reason = choose_model(rows, baselines, window)
    end = split + window
    customers_total = int(daily["customer"].nunique())
    holdout_rows = daily[(daily["day"] > split) & (daily["day"] <= end)]
    return BacktestResult(
        split_day=_to_date(split),
        holdout_days=window,
        requested_holdout_days=holdout_days,
        first_day=_to_date(first),
        last_day=_to_date(last),
        customers_total=customers_total,
        customers=len(stats),
        new_in_holdout=int(holdout_rows.loc[~holdout_rows["customer"].isin(stats["customer"]), "customer"].nunique()),
        repeat_customers=int((stats["x"] > 0).sum()),
        holdout_buyers=int((stats["holdout_purchase_days"] > 0).sum()),
        calibration_purchase_days=int((stats["x"] + 1).sum()),
        holdout_purchase_days=int(stats["holdout_purchase_days"].sum()),
        models=tuple(rows),
        baselines=baselines,
        calibration=_calibration_table(stats, forecasts),
        tracking=_tracking_table(daily, stats, first, split, end, fits),
        customer_table=table,
        chosen_model=chosen,
        reason=reason,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- the warehouse


def stored_purchases(
    store: Warehouse, as_of: date, history_days: int, max_customers: int | None = None
) -> pa.Table:
    """Net purchase amount per canonical customer and day over the `history_days` ending `as_of`.

    The events of merged IDs count for their canonical customer, junk IDs are left out, as in the
    profiles. Above `max_customers` customers a fixed sample of them is taken (by a hash of the ID:
    the same customers on every run): a model choice needs tens of thousands, not millions.
    """
    first = as_of - timedelta(days=history_days - 1)
    events = store.parquet_relation(RAW_EVENTS, days_between(first, as_of))
    merge_map = store.required_path(MERGE_MAP, as_of)
    empty = pa.table(
        {"canonical_id": pa.array([], pa.string()), "day": pa.array([], pa.date32()), "amount": pa.array([], pa.float64())}
    )
    if events is None:
        return empty
    query = f"""
        WITH purchases AS (
            SELECT coalesce(m.canonical_id, e.customer_id) AS canonical_id, CAST(e."date" AS DATE) AS day,
                   sum(CASE WHEN e.event_type = 'refund' THEN -coalesce(e.amount, 0) ELSE coalesce(e.amount, 0) END)
                       AS amount,
                   bool_or(e.event_type = 'purchase') AS bought
            FROM {events} e
            LEFT JOIN read_parquet({sql_string(str(merge_map))}) m ON e.customer_id = m.old_id
            WHERE e.event_type IN ('purchase', 'refund') AND NOT coalesce(m.is_junk, false)
            GROUP BY ALL
        )
        SELECT canonical_id, day, amount FROM purchases WHERE bought
    """
    if max_customers is not None:
        query = f"""
            WITH bought AS ({query})
            SELECT * FROM bought
            WHERE hash(canonical_id) % 1000000
                  < ceil(1000000.0 * {int(max_customers)} / (SELECT count(DISTINCT canonical_id) FROM bought))
        """
    with store.connect() as con:
        table = con.sql(f"SELECT * FROM ({query}) ORDER BY canonical_id, day").to_arrow_table()
    return table


#: Keys of the clv_backtest partition's Parquet metadata holding the calibration and tracking tables.
CALIBRATION_KEY, TRACKING_KEY = "segmentation.backtest_calibration", "segmentation.backtest_tracking"


def backtest_tables_metadata(result: BacktestResult) -> dict[str, str]:
    """The calibration (by calibration frequency) and tracking (cumulative, by day) tables as JSON
    records, stored with the backtest's rows for the report's charts."""
    tracking = result.tracking
    if "day" in tracking.columns:  # none without purchases
        tracking = tracking.assign(day=tracking["day"].astype(str))
    return {
        CALIBRATION_KEY: result.calibration.to_json(orient="records"),
        TRACKING_KEY: tracking.to_json(orient="records"),
    }


#: How the report names the baselines (their `description` says how they are computed).
BASELINE_LABELS = {
    "recency": "Days since the last purchase (rule of thumb)",
    "heuristic": "Silence against the usual gap (rule of thumb)",
}


def backtest_rows(result: BacktestResult) -> pa.Table:
    """The models and baselines of a backtest as rows of the clv_backtest table."""
    common = {"split_day": result.split_day, "holdout_days": result.holdout_days, "customers": result.customers}
    rows = [
        {
            **common,
            "kind": "model",
            "name": row.model,
            "label": row.label,
            "converged": row.converged,
            "chosen": row.model == result.chosen_model,
            "parameters": list(row.parameters.items()),
            "log_likelihood": _finite(row.log_likelihood),
            "forecast_purchase_days": _finite(row.forecast_total),
            "actual_purchase_days": _finite(row.actual_total),
            "error_percent": _finite(row.percent_error),
            "mae": _finite(row.mae),
            "churn_auc": _finite(row.auc),
            "reason": result.reason if row.model == result.chosen_model else (row.note or None),
        }
        for row in result.models
    ]
    rows += [
        {
            **common,
            "kind": "baseline",
            "name": row.baseline,
            "label": BASELINE_LABELS.get(row.baseline, row.description),
            "converged": None,
            "chosen": False,
            "parameters": None,
            "log_likelihood": None,
            "forecast_purchase_days": _finite(row.forecast_total),
            "actual_purchase_days": _finite(row.actual_total),
            "error_percent": _finite(row.percent_error),
            "mae": _finite(row.mae),
            "churn_auc": _finite(row.auc),
            "reason": None,
        }
        for row in result.baselines
    ]
    return pa.Table.from_pylist(rows, schema=CLV_BACKTEST.schema)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
