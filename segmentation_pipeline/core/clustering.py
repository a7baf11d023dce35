"""Profiles -> feature matrix -> k -> segments with stable IDs, names and traits.

Matrix
    The configured features (core.features) of every profile. A share map
    (category_shares, channel_shares) becomes one column per label. Missing
    values take the feature's fill (no purchase: recency = the window length;
    no cart: conversion 0). Heavy-tailed counts and money get log1p; then every
    column is robust-scaled: minus its median, divided by its interquartile
    range (its standard deviation where the IQR is 0, 1 where both are or where every
    value is the same).

Choosing k (unless `n_clusters` is set)
    Every k in [k_min, k_max] is fitted on a sample of at most
    `selection_sample` profiles and scored by the silhouette (on at most
    `silhouette_sample` of them), Calinski-Harabasz, Davies-Bouldin and the
    elbow of the inertia curve (kneedle: the k farthest below the chord of the
    normalised curve). Each criterion is min-max normalised over the
    candidates (Davies-Bouldin inverted; the elbow as 1 - |k - k_elbow| /
    (k_max - k_min)), and the score is 0.4 silhouette + 0.2 Calinski-Harabasz
    + 0.2 Davies-Bouldin + 0.2 elbow. The highest score wins; ties go to the
    smaller k.

Fitting
    k-means with `n_init` starts; above `minibatch_above` profiles,
    MiniBatchKMeans. Deterministic for a given seed. Only customers with at
    least `min_active_days` active days choose k and shape the centroids
    (when there are at least MIN_SHAPING_PER_SEGMENT of them per segment of
    the smallest k; otherwise everyone does); everyone is then assigned to
    the nearest centroid. These are the behaviour clusters (the k above).

Segments within lifecycle groups
    A segment is the customers of one behaviour cluster in one lifecycle
    group (LIFECYCLE_GROUPS: prospects; new; active and loyal; at risk and
    lapsed): "lapsed big-basket shoppers" and "new big-basket shoppers" are
    two segments, because a marketer speaks to them differently, while their
    behaviour is one pattern, found on every customer at once. Behaviour first,
    then lifecycle (rather than clustering each stage on its own) keeps the
    behaviour clusters shaped by the customers whose history shows one, the
    same personas across stages, and k chosen once on the most data. A segment
    above `max_segment_share` of all customers is split by k-means on its own
    members; one below `min_segment_share` joins the nearest segment of its
    lifecycle group. With `within_lifecycle` off (or profiles without stages),
    a segment is a behaviour cluster.

Stable IDs
    The previous snapshot's centroids (stored in original units; a segment's
    centroid is its shaping members' mean) are put through this snapshot's
    transform and matched to the new centroids of the same lifecycle group by
    the Hungarian algorithm on Euclidean distance. A match counts when its
    distance is at most `match_tolerance` x the median distance between the
    new centroids; matched segments keep their ID, the others get the next
    unused number.

Names and traits
    A segment's traits are the features on which its members' mean (in the
    transformed space) differs from the whole population's by at least
    `trait_threshold` population standard deviations, strongest first. Its
    name starts with its lifecycle stage (the one holding `lifecycle_name_share`
    of it, else its group's word) and strings together the words (core.features
    `high` / `low`) of what sets it apart within its lifecycle group (recency
    and churn risk left to the stage word), in the order of the feature list
    (value, engagement, timing, category, channel, device, then CLV), e.g.
    "Lapsed frequent high-value electronics-focused shoppers".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    pairwise_distances,
)
from threadpoolctl import threadpool_limits

from .errors import ClusteringError, InsufficientDataError
from .features import DEFAULT_CLUSTER_FEATURES, FEATURES, LOG1P, Feature, feature
from .lifecycle import ACTIVE, AT_RISK, LAPSED, LOYAL, NEW, PROSPECT, STAGE_WORDS, STAGES
from .schemas import CLUSTERS, SEGMENT_MIGRATION, SEGMENTS, conform

Item = TypeVar("Item")
Fitted = TypeVar("Fitted")

SEGMENT_PREFIX = "S"
SELECTION_WEIGHTS = {"silhouette": 0.4, "calinski_harabasz": 0.2, "davies_bouldin": 0.2, "elbow": 0.2}


@dataclass(frozen=True)
class ClusteringSettings:
    features: tuple[str, ...] = DEFAULT_CLUSTER_FEATURES
    k_min: int = 3
    k_max: int = 10
    #: Fixed number of segments; None chooses k by the rule in the module docstring.
    n_clusters: int | None = None
    seed: int = 42
    n_init: int = 4
    selection_sample: int = 20_000
    silhouette_sample: int = 5_000
    minibatch_above: int = 50_000
    #: Customers with fewer active days are assigned to their nearest segment but do not shape
    #: the segments or the choice of k: one or two visits are too thin to show a pattern.
    min_active_days: int = 5
    match_tolerance: float = 0.5
    trait_threshold: float = 0.5
    name_words: int = 3
    #: A segment name starts with the lifecycle stage ("Lapsed ...") that holds at least this share of it.
    lifecycle_name_share: float = 0.6
    #: Segments are built within lifecycle groups (LIFECYCLE_GROUPS): a segment never mixes new and
    #: lapsed customers. Off, or without a lifecycle_stage column, a segment is a behaviour cluster.
    within_lifecycle: bool = True
    #: A segment above this share of all customers is split by behaviour: most customers is not a target.
    max_segment_share: float = 0.5
    #: A segment below this share of all customers joins the nearest segment of its lifecycle group.
    min_segment_share: float = 0.01
    #: BLAS/OpenMP threads for scikit-learn. One by default: on a 2-core machine with other work
    #: running, k-means with two threads was measured 5-30 times slower than with one.
    threads: int = 1
    #: Independent k-means fits (the k candidates, the robustness refits) run this many at a
    #: time on threads of their own, each fit single-threaded: k-means releases the GIL, so two
    #: fits use two cores without the thread contention of one fit on two.
    parallel_fits: int = 2

    def __post_init__(self) -> None:
        if self.k_min < 2 or self.k_max < self.k_min:
            raise ClusteringError(f"k_range must satisfy 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        if self.n_clusters is not None and self.n_clusters < 2:
            raise ClusteringError(f"n_clusters must be at least 2, got {self.n_clusters}")
        if not self.features:
            raise ClusteringError("no clustering features configured")
        if not 0 < self.max_segment_share <= 1:
            raise ClusteringError(f"max_segment_share must lie in (0, 1], got {self.max_segment_share}")
        for name in self.features:
            spec = feature(name)
            if spec.transform is None:
                raise ClusteringError(f"feature {name!r} is a label, not a number; it cannot be clustered")

    @property
    def k_candidates(self) -> list[int]:
        return [self.n_clusters] if self.n_clusters else list(range(self.k_min, self.k_max + 1))


# ---------------------------------------------------------------------------- matrix


@dataclass(frozen=True)
class FeatureMatrix:
    """The scaled matrix and how to go back and forth between it and original units."""

    values: np.ndarray
    columns: list[str]
    #: Feature name -> its column indices (a share map has several).
    groups: dict[str, list[int]]
    log1p: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    #: Configured features that are null for every profile (the source cannot support them).
    dropped: list[str] = field(default_factory=list)

    def to_original(self, scaled: np.ndarray) -> np.ndarray:
        transformed = scaled * self.scale + self.center
        return np.where(self.log1p, np.expm1(transformed), transformed)

    def from_original(self, original: np.ndarray) -> np.ndarray:
        return (_transformed(original, self.log1p) - self.center) / self.scale


def features_of(segments: pa.Table) -> list[str]:
    """The features a stored snapshot was clustered on, read from its centroids' columns."""
    if segments.num_rows == 0:
        return []
    columns = [key for key, _ in segments["centroid"][0].as_py()]
    return list(dict.fromkeys(_split_column(column)[0] for column in columns))


def share_column(feature_name: str, key: str) -> str:
    return f"{feature_name}[{key}]"


def feature_matrix(profiles: pa.Table, features: Sequence[str]) -> FeatureMatrix:
    """The clustering matrix of `profiles` (see the module docstring)."""
    lookback_days = int(pc.max(profiles["window_days"]).as_py() or 0)
    columns: list[np.ndarray] = []
    names: list[str] = []
    groups: dict[str, list[int]] = {}
    log1p: list[bool] = []
    dropped = []
    for name in features:
        spec = feature(name)
        column = profiles[name]
        if profiles.num_rows and column.null_count == profiles.num_rows:
            dropped.append(name)
            continue
        if spec.is_share_map:
            keys, block = _expand_share_map(column)
            parts = [(share_column(name, key), block[:, index]) for index, key in enumerate(keys)]
        else:
            parts = [(name, _filled(column, spec, lookback_days))]
        groups[name] = list(range(len(names), len(names) + len(parts)))
        for column_name, values in parts:
            names.append(column_name)
            columns.append(values)
            log1p.append(spec.transform == LOG1P)
    if not columns:
        raise ClusteringError(f"none of the features {list(features)} has a value; nothing to cluster")
    flags = np.array(log1p)
    # Built a feature per row first: each transform and quantile then works on one contiguous
    # row (a quantile takes half the time of the same selection across rows), and the matrix is
    # scaled in place. The values are those of _transformed and `(transformed - center) / scale`;
    # each 230 MB temporary they needed at 1.15 million customers cost fresh pages.
    by_feature = np.stack(columns).astype(float, copy=False)
    for row in np.flatnonzero(flags):
        np.log1p(np.maximum(by_feature[row], 0.0, out=by_feature[row]), out=by_feature[row])
    center = np.median(by_feature, axis=1)
    q75, q25 = np.percentile(by_feature, [75, 25], axis=1)
    scale = q75 - q25
    # Where every value is the same, the scale is 1: the computed deviation of such a column can be
    # a rounding error (8e-16 for a column of 1/3s among others), and dividing by it put anything
    # from outside the column (the previous snapshot's centroids, stored to six decimals) 4e8 away.
    same = np.array([not iqr > 0 and bool((row == row[:1]).all()) for iqr, row in zip(scale, by_feature)])
    values = np.ascontiguousarray(by_feature.T)
    del by_feature
    if not (scale > 0).all():
        std = values.std(axis=0)
        scale = np.where(scale > 0, scale, np.where((std > 0) & ~same, std, 1.0))
    values -= center
    values /= scale
    return FeatureMatrix(values, names, groups, flags, center, scale, dropped)


def _transformed(original: np.ndarray, log1p: np.ndarray) -> np.ndarray:
    """log1p where the feature is heavy-tailed (negative values count as 0), the value itself elsewhere.

    Only the heavy-tailed columns are transformed (not every column, then half thrown away).
    """
    transformed = np.array(original, dtype=float)
    if log1p.any():
        transformed[..., log1p] = np.log1p(np.maximum(transformed[..., log1p], 0.0))
    return transformed


def _filled(column: pa.ChunkedArray, spec: Feature, lookback_days: int) -> np.ndarray:
    fill = float(lookback_days) if spec.fill == "lookback" else float(spec.fill)
    return pc.fill_null(column, fill).to_numpy(zero_copy_only=False).astype(float)


def _expand_share_map(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """A map<string, double> column as a dense matrix, one column per key (sorted); absent keys are 0."""
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy()
    # keys and items are the whole child arrays; a sliced map column starts part-way into them.
    keys = array.keys.slice(offsets[0], offsets[-1] - offsets[0])
    items = np.nan_to_num(array.items.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False))
    rows = np.repeat(np.arange(len(array)), np.diff(offsets))
    # Dictionary codes instead of np.unique on strings: an order of magnitude faster at a million rows.
    encoded = pc.dictionary_encode(keys)
    dictionary = encoded.dictionary.to_pylist()
    order = np.argsort(dictionary, kind="stable")
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    labels = [dictionary[index] for index in order]
    block = np.zeros((len(array), len(labels)))
    # One flat index per entry: a put through (row, column) index pairs took twice as long.
    flat = rows * len(labels) + position[encoded.indices.to_numpy(zero_copy_only=False)]
    block.reshape(-1)[flat] = items.astype(float)
    return labels, block


# ---------------------------------------------------------------------------- k and fit


@dataclass(frozen=True)
class KCandidate:
    k: int
    inertia: float
    silhouette: float
    calinski_harabasz: float
    davies_bouldin: float
    score: float = float("nan")


@dataclass(frozen=True)
class KSelection:
    k: int
    candidates: list[KCandidate]
    elbow_k: int | None
    sample_size: int
    rule: str

    def as_table(self) -> pd.DataFrame:
        return pd.DataFrame([candidate.__dict__ for candidate in self.candidates])


def cluster_labels(matrix: np.ndarray, k: int, seed: int, settings: ClusteringSettings = ClusteringSettings()):
    """k-means labels and centres of `matrix`; MiniBatchKMeans above `minibatch_above` rows."""
    if len(matrix) < k:
        raise InsufficientDataError(f"{len(matrix)} customers cannot form {k} segments")
    if len(matrix) > settings.minibatch_above:
        model = MiniBatchKMeans(
            n_clusters=k, n_init=settings.n_init, random_state=seed, batch_size=4096, max_no_improvement=20
        )
    else:
        model = KMeans(n_clusters=k, n_init=settings.n_init, random_state=seed)
    labels = model.fit_predict(matrix)
    return labels.astype(np.int64), model.cluster_centers_


def fit_side_by_side(
    fit: Callable[[Item], Fitted], items: Sequence[Item], workers: int, threads: int = 1
) -> list[Fitted]:
    """`fit` of every item, in the items' order, `workers` at a time on threads of their own.

    BLAS and OpenMP are held to `threads` for the call, and each worker thread holds OpenMP
    to it too (OpenMP's thread count is per calling thread, so the caller's limit does not
    reach them): the fits are then exactly those of a serial run, and two of them never ask
    for more cores than there are.
    """
    with threadpool_limits(threads):
        if workers <= 1 or len(items) <= 1:
            return [fit(item) for item in items]
        with ThreadPoolExecutor(
            max_workers=workers, initializer=threadpool_limits, initargs=(threads, "openmp")
        ) as pool:
            return list(pool.map(fit, items))


def choose_k(matrix: np.ndarray, settings: ClusteringSettings) -> KSelection:
    """The number of segments, by the rule in the module docstring."""
    rng = np.random.default_rng(settings.seed)
    sample = matrix
    if len(matrix) > settings.selection_sample:
        sample = matrix[np.sort(rng.choice(len(matrix), settings.selection_sample, replace=False))]
    # Customers with identical features cannot be told apart: k stays below the distinct profiles.
    distinct = len(np.unique(sample, axis=0))
    candidates_k = [k for k in settings.k_candidates if k < len(sample) and k <= distinct]
    if not candidates_k:
        raise InsufficientDataError(
            f"{len(matrix)} customers ({distinct} distinct profiles) are too few for k in "
            f"{settings.k_candidates[0]}..{settings.k_candidates[-1]}"
        )
    silhouette_rows = np.arange(len(sample))
    if len(sample) > settings.silhouette_sample:
        silhouette_rows = np.sort(rng.choice(len(sample), settings.silhouette_sample, replace=False))
    # One distance matrix serves every candidate's silhouette.
    distances = pairwise_distances(sample[silhouette_rows])

    def candidate(k: int) -> KCandidate:
        model = KMeans(n_clusters=k, n_init=settings.n_init, random_state=settings.seed).fit(sample)
        labels = model.labels_
        if len(np.unique(labels)) < 2:
            return KCandidate(k, float(model.inertia_), -1.0, 0.0, float("inf"))
        sil_labels = labels[silhouette_rows]
        score = silhouette(distances, sil_labels) if len(np.unique(sil_labels)) > 1 else -1.0
        return KCandidate(
            k,
            float(model.inertia_),
            score,
            float(calinski_harabasz_score(sample, labels)),
            float(davies_bouldin_score(sample, labels)),
        )

    candidates = fit_side_by_side(candidate, candidates_k, settings.parallel_fits, settings.threads)
    if settings.n_clusters:
        return KSelection(settings.n_clusters, candidates, None, len(sample), "n_clusters set in config")
    elbow = kneedle([c.k for c in candidates], [c.inertia for c in candidates])
    scored = _score_candidates(candidates, elbow)
    best = max(scored, key=lambda c: (c.score, -c.k))
    return KSelection(best.k, scored, elbow, len(sample), "0.4 silhouette + 0.2 CH + 0.2 DB + 0.2 elbow")


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of `labels` over the square matrix of their pairwise distances.

    scikit-learn's silhouette_score(metric="precomputed") by the same formula (a
    point alone in its cluster scores 0), but every point's summed distance to each
    cluster comes from one matrix product instead of a bincount per point: 0.09 ->
    0.02 s for 5,000 points, paid once per candidate k.
    """
    _, codes = np.unique(labels, return_inverse=True)
    sizes = np.bincount(codes)
    rows = np.arange(len(codes))
    members = np.zeros((len(codes), len(sizes)))
    members[rows, codes] = 1.0
    sums = distances @ members
    with np.errstate(divide="ignore", invalid="ignore"):
        within = sums[rows, codes] / (sizes[codes] - 1)
        sums[rows, codes] = np.inf
        nearest_other = (sums / sizes).min(axis=1)
        values = (nearest_other - within) / np.maximum(within, nearest_other)
    return float(np.mean(np.nan_to_num(values)))


def kneedle(ks: Sequence[int], inertias: Sequence[float]) -> int | None:
    """The elbow of a decreasing, convex inertia curve: the point farthest below its normalised chord."""
    if len(ks) < 3:
        return None
    x = np.asarray(ks, float)
    y = np.asarray(inertias, float)
    x = (x - x.min()) / (x.max() - x.min())
    span = y.max() - y.min()
    if span <= 0:
        return None
    y = (y - y.min()) / span
    gap = (1.0 - x) - y
    # Points on the chord itself give 1e-16 rather than 0: a straight line has no elbow.
    return int(ks[int(np.argmax(gap))]) if gap.max() > 1e-9 else None


def normalised(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] over the finite values; a value that is not finite gets 0."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low, high = values[finite].min(), values[finite].max()
    if high == low:
        return np.where(finite, 1.0, 0.0)
    return np.where(finite, (values - low) / (high - low), 0.0)


def _score_candidates(candidates: list[KCandidate], elbow: int | None) -> list[KCandidate]:
    ks = np.array([c.k for c in candidates], float)
    silhouette = normalised(np.array([c.silhouette for c in candidates]))
    calinski = normalised(np.array([c.calinski_harabasz for c in candidates]))
    davies = 1.0 - normalised(np.array([c.davies_bouldin for c in candidates]))
    davies = np.where(np.isfinite([c.davies_bouldin for c in candidates]), davies, 0.0)
    span = max(ks.max() - ks.min(), 1.0)
    elbow_score = np.zeros_like(ks) if elbow is None else 1.0 - np.abs(ks - elbow) / span
    weights = SELECTION_WEIGHTS
    scores = (
        weights["silhouette"] * silhouette
        + weights["calinski_harabasz"] * calinski
        + weights["davies_bouldin"] * davies
        + weights["elbow"] * elbow_score
    )
    return [KCandidate(**{**c.__dict__, "score": round(float(s), 6)}) for c, s in zip(candidates, scores)]


# ---------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segmentation:
    assignments: pa.Table
    segments: pa.Table
    #: How the number of behaviour clusters was chosen.
    selection: KSelection
    matrix: FeatureMatrix
    labels: np.ndarray
    #: The customers that shaped the behaviour clusters (see ClusteringSettings.min_active_days).
    shaping: np.ndarray
    #: Label -> segment ID.
    segment_ids: list[str]
    #: Each customer's behaviour cluster (0 .. selection.k - 1), before lifecycle stages split them.
    behaviour: np.ndarray
    #: How the lifecycle stages changed the behaviour clusters into segments, for the run's log.
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.segment_ids)


def segment_customers(
    profiles: pa.Table,
    settings: ClusteringSettings,
    previous_segments: pa.Table | None = None,
    used_ids: Sequence[str] = (),
) -> Segmentation:
    """Cluster the profiles and describe the segments; IDs follow `previous_segments` where they match."""
    with threadpool_limits(settings.threads):
        return _segment_customers(profiles, settings, previous_segments, used_ids)


#: The lifecycle groups segments are built within (core.lifecycle stages): a segment never mixes
#: customers of two groups. At risk and lapsed customers share one (both are won back), and
#: active and loyal customers another (both buy in their rhythm).
LIFECYCLE_GROUPS: tuple[tuple[str, ...], ...] = ((PROSPECT,), (NEW,), (ACTIVE, LOYAL), (AT_RISK, LAPSED))


#: A group's word in a segment name when none of its stages holds most of the segment.
GROUP_WORDS = {(ACTIVE, LOYAL): "active", (AT_RISK, LAPSED): "lapsing"}


def lifecycle_groups(profiles: pa.Table, settings: ClusteringSettings) -> np.ndarray | None:
    """Each profile's lifecycle group (its index in LIFECYCLE_GROUPS); None when segments are not built
    within lifecycle groups or the profiles have no stages."""
    if (
        not settings.within_lifecycle
        or "lifecycle_stage" not in profiles.column_names
        or profiles["lifecycle_stage"].null_count == profiles.num_rows
    ):
        return None
    stages = pc.fill_null(profiles["lifecycle_stage"], "")
    codes = pc.index_in(stages, value_set=pa.array(STAGES, pa.string()))
    if codes.null_count:
        unknown = pc.unique(pc.filter(stages, pc.is_null(codes))).to_pylist()
        raise ClusteringError(f"profiles name lifecycle stages that do not exist: {sorted(unknown)[:5]}")
    group_of_stage = np.array([next(i for i, members in enumerate(LIFECYCLE_GROUPS) if stage in members) for stage in STAGES])
    return group_of_stage[codes.to_numpy(zero_copy_only=False)]


def _segment_customers(
    profiles: pa.Table,
    settings: ClusteringSettings,
    previous_segments: pa.Table | None,
    used_ids: Sequence[str],
) -> Segmentation:
    if profiles.num_rows == 0:
        raise InsufficientDataError("no profiles to cluster: the look-back window holds no customers")
    matrix = feature_matrix(profiles, settings.features)
    minimum = MIN_SHAPING_PER_SEGMENT * settings.k_candidates[0]
    shaping = established_customers(profiles, settings.min_active_days, minimum)
    # One copy of the shaping rows for k selection and the fit (140 MB at 1.15 million customers).
    shaping_values = matrix.values[shaping]
    selection = choose_k(shaping_values, settings)
    behaviour, _ = fit_behaviour(matrix.values, shaping, selection.k, settings.seed, settings, shaping_values)
    del shaping_values
    groups = lifecycle_groups(profiles, settings)
    staged = groups is not None
    cells = lifecycle_cells(
        matrix.values, behaviour, groups if staged else np.zeros(len(behaviour), dtype=np.int64), settings, shaping
    )
    labels, centers, group_of = cells.labels, cells.centers, cells.groups
    sizes = np.bincount(labels, minlength=len(centers))
    label_groups = [_group_name(group) if staged else "" for group in group_of]
    matches = match_segments(matrix, centers, previous_segments, settings.match_tolerance, label_groups)
    segment_ids = _segment_ids(sizes, matches, used_ids)
    distance = distance_to_center(matrix.values, centers, labels)
    assignments = pa.table(
        {
            "canonical_id": profiles["canonical_id"],
            "segment_id": pa.array(np.array(segment_ids, dtype=object)[labels], pa.string()),
            "distance": pa.array(distance),
            "shaped_segments": pa.array(shaping),
            "behaviour_cluster": pa.array(behaviour.astype(np.int32)),
        }
    )
    segments = describe_segments(profiles, matrix, labels, centers, segment_ids, matches, settings, label_groups)
    return Segmentation(
        conform(assignments, CLUSTERS),
        conform(segments, SEGMENTS),
        selection,
        matrix,
        labels,
        shaping,
        segment_ids,
        behaviour,
        cells.notes,
    )


def _group_name(group: int) -> str:
    """'active+loyal': the stages of a lifecycle group, as stored with its segments."""
    return "+".join(LIFECYCLE_GROUPS[group])


def fit_behaviour(
    values: np.ndarray,
    shaping: np.ndarray,
    k: int,
    seed: int,
    settings: ClusteringSettings,
    shaping_values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour cluster of every row and the centres: k-means on the shaping rows, the others to the nearest."""
    shaping_values = values[shaping] if shaping_values is None else shaping_values
    fitted, centers = cluster_labels(shaping_values, k, seed, settings)
    fitted, centers = _drop_empty(fitted, centers)
    labels = nearest_center(values, centers)
    labels[shaping] = fitted
    return labels, centers


@dataclass(frozen=True)
class LifecycleCells:
    #: Segment label of every row, 0 .. len(centers) - 1.
    labels: np.ndarray
    #: Each segment's mean row.
    centers: np.ndarray
    #: Each segment's lifecycle group (index in LIFECYCLE_GROUPS).
    groups: list[int]
    notes: list[str]


def lifecycle_cells(
    values: np.ndarray,
    behaviour: np.ndarray,
    groups: np.ndarray,
    settings: ClusteringSettings,
    shaping: np.ndarray | None = None,
) -> LifecycleCells:
    """Segments from behaviour clusters and lifecycle groups: the customers of one behaviour cluster in
    one lifecycle group ("lapsed big-basket shoppers").

    A segment holding more than `max_segment_share` of all customers is split by k-means on its own
    members (k from 2 up to k_max, the smallest k that brings every part under the share); then a
    segment smaller than `min_segment_share` of all customers (and than MIN_SHAPING_PER_SEGMENT) joins
    the segment of its lifecycle group with the nearest mean, smallest first, so that no segment mixes
    lifecycle groups. A segment's centre is the mean of its `shaping` members (of all of them when it has
    none): customers with thin histories do not move it. Deterministic for a given seed."""
    n = len(values)
    keys = groups.astype(np.int64) * (int(behaviour.max(initial=0)) + 1) + behaviour
    _, labels = np.unique(keys, return_inverse=True)
    labels = labels.astype(np.int64)
    notes: list[str] = []
    cap = settings.max_segment_share * n
    for label in range(int(labels.max(initial=-1)) + 1):
        members = np.flatnonzero(labels == label)
        if len(members) <= cap:
            continue
        for k in range(2, max(2, settings.k_max) + 1):
            parts, _ = cluster_labels(values[members], k, settings.seed, settings)
            if np.bincount(parts).max() <= cap:
                break
        fresh = labels.max() + 1
        labels[members] = np.where(parts == 0, label, fresh + parts - 1)
        notes.append(
            f"a segment of {len(members):,} customers ({len(members) / n:.0%}) was split in {k} by their behaviour: "
            f"no segment holds more than {settings.max_segment_share:.0%} of all customers"
        )
    group_of = _cell_groups(labels, groups)
    minimum = max(MIN_SHAPING_PER_SEGMENT, int(np.ceil(settings.min_segment_share * n)))
    # Merges work on each segment's sums, not on the rows: one pass over the customers before, one after.
    k = len(group_of)
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    weights = shaping if shaping is not None else np.ones(n, dtype=bool)
    shaped = np.bincount(labels[weights], minlength=k).astype(float)
    sums = _cell_sums(values[weights], labels[weights], k)
    all_sums = _cell_sums(values, labels, k)
    into = np.arange(k)
    alive = np.ones(k, dtype=bool)

    def mean_of(label: int) -> np.ndarray:
        # The shaping members' mean; all members' where none shaped the segment.
        return sums[label] / shaped[label] if shaped[label] else all_sums[label] / max(sizes[label], 1)

    while True:
        small = [
            label
            for label in np.argsort(np.where(alive, sizes, np.iinfo(np.int64).max), kind="stable")
            if alive[label]
            and sizes[label] < minimum
            and sum(1 for other in range(k) if alive[other] and group_of[other] == group_of[label]) > 1
        ]
        if not small:
            break
        label = int(small[0])
        others = [other for other in range(k) if alive[other] and group_of[other] == group_of[label] and other != label]
        centers_now = np.array([mean_of(other) for other in others])
        target = others[int(np.argmin(cdist(mean_of(label)[None, :], centers_now)[0]))]
        notes.append(
            f"a segment of {sizes[label]:,} customers joined the nearest of its lifecycle group "
            f"(segments hold at least {minimum:,} customers)"
        )
        for array in (sizes, shaped):
            array[target] += array[label]
        sums[target] += sums[label]
        all_sums[target] += all_sums[label]
        alive[label] = False
        into[into == label] = target
    kept = np.flatnonzero(alive)
    renumber = np.full(k, -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    labels = renumber[into[labels]] if k else labels
    centers = np.array([mean_of(label) for label in kept]) if k else np.zeros((0, values.shape[1]))
    group_of = [group_of[label] for label in kept]
    return LifecycleCells(labels, centers, group_of, notes)


def _cell_groups(labels: np.ndarray, groups: np.ndarray) -> list[int]:
    """The lifecycle group of each segment (all of its members share one)."""
    first = np.full(int(labels.max(initial=-1)) + 1, -1, dtype=np.int64)
    first[labels[::-1]] = np.arange(len(labels))[::-1]
    return [int(groups[index]) for index in first]


def _cell_sums(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each of the `k` segments' column sums over its rows, in one bincount per column."""
    return np.stack(
        [np.bincount(labels, weights=values[:, column], minlength=k) for column in range(values.shape[1])], axis=1
    ) if k else np.zeros((0, values.shape[1]))


def _cell_means(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each of the `k` segments' mean row."""
    return _cell_sums(values, labels, k) / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]


#: Established customers shape the segments only when there are this many per segment of the
#: smallest k considered; early in a history (a backfill's first days) there are a handful, and
#: everyone shapes the segments instead.
MIN_SHAPING_PER_SEGMENT = 10


def established_customers(profiles: pa.Table, min_active_days: int, minimum: int = 2) -> np.ndarray:
    """Customers whose history shapes the segments; all of them when fewer than `minimum` would."""
    return established(pc.fill_null(profiles["active_days"], 0).to_numpy(zero_copy_only=False), min_active_days, minimum)


def established(active_days: np.ndarray, min_active_days: int, minimum: int = 2) -> np.ndarray:
    """Those of `active_days` with at least `min_active_days`; all of them when fewer than `minimum` have."""
    shaping = active_days >= min_active_days
    return shaping if shaping.sum() >= minimum else np.ones(len(active_days), dtype=bool)


def nearest_center(matrix: np.ndarray, centers: np.ndarray, batch_rows: int = 100_000) -> np.ndarray:
    """Index of the nearest centre of every row, in batches to bound memory."""
    labels = np.empty(len(matrix), dtype=np.int64)
    for start in range(0, len(matrix), batch_rows):
        labels[start : start + batch_rows] = cdist(matrix[start : start + batch_rows], centers).argmin(axis=1)
    return labels


def distance_to_center(
    matrix: np.ndarray, centers: np.ndarray, labels: np.ndarray, batch_rows: int = 100_000
) -> np.ndarray:
    """Euclidean distance of every row to its own centre (float64), in batches: the same values as one
    `np.linalg.norm(matrix - centers[labels], axis=1)`, without its two temporary copies of the
    matrix (0.7 -> 0.1 s at 1.15 million customers, where each copy is 230 MB of fresh pages)."""
    if len(labels) != len(matrix):
        raise ClusteringError(f"{len(labels)} segment labels for {len(matrix)} rows")
    distance = np.empty(len(matrix))
    for start in range(0, len(matrix), batch_rows):
        rows = slice(start, start + batch_rows)
        distance[rows] = np.linalg.norm(matrix[rows] - centers[labels[rows]], axis=1)
    return distance


def _drop_empty(labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MiniBatchKMeans can leave a centre without members; renumber the labels without it."""
    used = np.unique(labels)
    if len(used) == len(centers):
        return labels, centers
    renumber = np.full(len(centers), -1)
    renumber[used] = np.arange(len(used))
    return renumber[labels], centers[used]


@dataclass(frozen=True)
class SegmentMatch:
    previous_id: str
    distance: float


def match_segments(
    matrix: FeatureMatrix,
    centers: np.ndarray,
    previous: pa.Table | None,
    tolerance: float,
    label_stages: Sequence[str] | None = None,
) -> dict[int, SegmentMatch]:
    """Label -> the previous snapshot's segment it continues (Hungarian matching on centroids).

    A segment only continues one of the same lifecycle stage (`label_stages`, one per label; "" for
    segments of everyone); a previous snapshot built otherwise continues no segment of this one."""
    if previous is None or previous.num_rows == 0:
        return {}
    label_stages = list(label_stages) if label_stages is not None else [""] * len(centers)
    previous_ids = previous["segment_id"].to_pylist()
    previous_stages = (
        [group or "" for group in previous["lifecycle_group"].to_pylist()]
        if "lifecycle_group" in previous.column_names
        else [""] * previous.num_rows
    )
    previous_centroids = np.array(
        [[dict(row).get(column, np.nan) for column in matrix.columns] for row in previous["centroid"].to_pylist()]
    )
    comparable = ~np.isnan(previous_centroids).any(axis=0)
    if not comparable.any():
        return {}
    previous_scaled = matrix.from_original(np.nan_to_num(previous_centroids))[:, comparable]
    distances = cdist(centers[:, comparable], previous_scaled)
    spread = float(np.median(pdist(centers[:, comparable]))) if len(centers) > 1 else 1.0
    matches = {}
    for stage in dict.fromkeys(label_stages):
        labels = np.array([label for label, own in enumerate(label_stages) if own == stage])
        candidates = np.array([index for index, own in enumerate(previous_stages) if own == stage])
        if not len(candidates):
            continue
        rows, cols = linear_sum_assignment(distances[np.ix_(labels, candidates)])
        for row, col in zip(labels[rows], candidates[cols]):
            if distances[row, col] <= tolerance * spread:
                matches[int(row)] = SegmentMatch(previous_ids[col], float(distances[row, col]))
    return matches


def segment_number(segment_id: str) -> int | None:
    digits = segment_id[len(SEGMENT_PREFIX) :]
    return int(digits) if segment_id.startswith(SEGMENT_PREFIX) and digits.isdigit() else None


def _segment_ids(sizes: np.ndarray, matches: dict[int, SegmentMatch], used_ids: Sequence[str]) -> list[str]:
    """Matched labels keep their previous ID; new ones count on from the highest ID ever used, largest first."""
    ids: list[str | None] = [matches[label].previous_id if label in matches else None for label in range(len(sizes))]
    numbers = [segment_number(i) for i in [*used_ids, *(i for i in ids if i)]]
    next_number = max([n for n in numbers if n is not None], default=0) + 1
    for label in sorted(range(len(sizes)), key=lambda label: (-sizes[label], label)):
        if ids[label] is None:
            ids[label] = f"{SEGMENT_PREFIX}{next_number:02d}"
            next_number += 1
    return [str(i) for i in ids]


def describe_segments(
    profiles: pa.Table,
    matrix: FeatureMatrix,
    labels: np.ndarray,
    centers: np.ndarray,
    segment_ids: list[str],
    matches: dict[int, SegmentMatch],
    settings: ClusteringSettings,
    label_stages: Sequence[str] | None = None,
) -> pa.Table:
    """One row per segment: size, value, centroid and means in original units, name and traits.

    Traits compare a segment with everyone. Its name says its lifecycle stage and then what sets it
    apart within that stage (the traits against the stage's customers), so that two segments of
    one stage are not both named after what the whole stage shares."""
    frame = _numeric_frame(profiles)
    clv = pc.fill_null(profiles["clv_estimate"], 0.0).to_numpy(zero_copy_only=False).astype(float)
    cycle_value = (
        pc.fill_null(profiles["cycle_value"], 0.0).to_numpy(zero_copy_only=False).astype(float)
        if "cycle_value" in profiles.column_names
        else None
    )
    population_mean = matrix.values.mean(axis=0)
    population_std = matrix.values.std(axis=0)
    population_std = np.where(population_std > 0, population_std, 1.0)
    original_centroids = matrix.to_original(centers)
    rows = []
    n = len(labels)
    population_means = frame.mean()
    top_categories = _modes(profiles["top_category"], labels, len(segment_ids))
    top_channels = _modes(profiles["top_channel"], labels, len(segment_ids))
    mixes = lifecycle_mixes(profiles, labels, len(segment_ids))
    label_stages = list(label_stages) if label_stages is not None else [""] * len(segment_ids)
    stage_labels = {stage: [lab for lab, own in enumerate(label_stages) if own == stage] for stage in label_stages}
    # Each lifecycle group's mean and spread, once (per segment, they cost 9 s at a million customers).
    stage_stats: dict[str, tuple[np.ndarray, np.ndarray, pd.Series]] = {}
    for stage, members_labels in stage_labels.items():
        if stage and len(members_labels) > 1:
            in_stage = np.isin(labels, members_labels)
            stage_values = matrix.values[in_stage]
            stage_std = stage_values.std(axis=0)
            stage_stats[stage] = (
                stage_values.mean(axis=0),
                np.where(stage_std > 1e-9, stage_std, 1.0),
                frame[in_stage].mean(),
            )
            del stage_values
    # Every segment's means in one pass over the rows (a pass per segment cost seconds at a million).
    k = len(segment_ids)
    sizes = np.bincount(labels, minlength=k)
    matrix_means = _cell_means(matrix.values, labels, k)
    frame_means = frame.groupby(labels).mean().reindex(range(k))
    clv_totals = np.bincount(labels, weights=clv, minlength=k)
    cycle_totals = np.bincount(labels, weights=cycle_value, minlength=k) if cycle_value is not None else None
    for label, segment_id in enumerate(segment_ids):
        size = int(sizes[label])
        z = (matrix_means[label] - population_mean) / population_std
        segment_means = frame_means.loc[label]
        traits = _traits(matrix, z, segment_means, population_means, settings.trait_threshold)
        naming = traits
        stage = label_stages[label]
        if stage in stage_stats:
            stage_mean, stage_std, stage_frame_means = stage_stats[stage]
            stage_z = (matrix_means[label] - stage_mean) / stage_std
            naming = [
                trait
                for trait in _traits(matrix, stage_z, segment_means, stage_frame_means, settings.trait_threshold)
                # The stage already says how recently they bought: no "lapsed" segment of recent customers.
                if _split_column(trait.column)[0] not in _STAGE_FEATURES
            ]
        rows.append(
            {
                "segment_id": segment_id,
                "traits": [trait.sentence for trait in traits],
                "words": name_words(naming, settings.name_words),
                "size": size,
                "share": float(size / n),
                "total_clv": float(clv_totals[label]),
                "mean_clv": float(clv_totals[label] / size) if size else float("nan"),
                "total_cycle_value": float(cycle_totals[label]) if cycle_totals is not None else None,
                "centroid": list(zip(matrix.columns, original_centroids[label].round(6).tolist())),
                "feature_means": [
                    (column, float(value)) for column, value in segment_means.round(6).items() if np.isfinite(value)
                ],
                "top_category": top_categories[label],
                "top_channel": top_channels[label],
                "is_new": label not in matches,
                "match_distance": matches[label].distance if label in matches else None,
                "lifecycle_mix": mixes[label],
                "lifecycle_group": stage or None,
            }
        )
    words = [
        lifecycle_words(row["lifecycle_mix"], settings.lifecycle_name_share, row["lifecycle_group"]) + row.pop("words")
        for row in rows
    ]
    names = segment_names(words, segment_ids)
    table = pa.Table.from_pylist([{**row, "name": name} for row, name in zip(rows, names)], schema=SEGMENTS.schema)
    return table.sort_by("segment_id")


@dataclass(frozen=True)
class Trait:
    column: str
    z: float
    word: str
    sentence: str


def _traits(
    matrix: FeatureMatrix, z: np.ndarray, segment_means: pd.Series, population_means: pd.Series, threshold: float
) -> list[Trait]:
    """The segment's features at least `threshold` standard deviations from the population's, strongest
    first, each with its segment and population mean in original units."""
    traits = []
    for index in np.argsort(-np.abs(z), kind="stable"):
        if abs(z[index]) < threshold:
            break
        column = matrix.columns[index]
        name, key = _split_column(column)
        spec = feature(name)
        word = (spec.high if z[index] > 0 else spec.low).format(key=(key or "").replace("_", " "))
        segment_value = segment_means[column]
        population_value = population_means[column]
        label = f"{name.replace('_', ' ')} {key}" if key else name.replace("_", " ")
        direction = "high" if z[index] > 0 else "low"
        traits.append(
            Trait(
                column,
                float(z[index]),
                word,
                f"{direction} {label}: {_number(segment_value)} vs {_number(population_value)} overall",
            )
        )
    return traits


def _split_column(column: str) -> tuple[str, str | None]:
    if column.endswith("]") and "[" in column:
        name, key = column[:-1].split("[", 1)
        return name, key
    return column, None


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def name_words(traits: list[Trait], limit: int) -> list[str]:
    """The words of the `limit` strongest traits, in the order of the feature list."""
    strongest = [trait for trait in traits if trait.word][:limit]
    return [trait.word for trait in sorted(strongest, key=lambda trait: _FEATURE_ORDER[_split_column(trait.column)[0]])]


def lifecycle_mixes(profiles: pa.Table, labels: np.ndarray, k: int) -> list[list[tuple[str, float]] | None]:
    """Each segment's share of customers per lifecycle stage, in the order of a customer's life."""
    if "lifecycle_stage" not in profiles.column_names:
        return [None] * k
    stages = pc.fill_null(profiles["lifecycle_stage"], "").to_numpy(zero_copy_only=False)
    sizes = np.maximum(np.bincount(labels, minlength=k), 1)
    counts = {stage: np.bincount(labels[stages == stage], minlength=k) for stage in STAGES}
    return [
        [(stage, float(counts[stage][label] / sizes[label])) for stage in STAGES if counts[stage][label]]
        for label in range(k)
    ]


def lifecycle_words(
    mix: list[tuple[str, float]] | None, dominant_share: float, group: str | None = None
) -> list[str]:
    """The stage word ('lapsed') when one stage holds at least `dominant_share` of the segment; else the
    word of its lifecycle group ('lapsing' for at risk and lapsed customers), if it has one."""
    stage, share = max(mix or [("", 0.0)], key=lambda item: item[1])
    if share >= dominant_share:
        return [STAGE_WORDS[stage]]
    word = GROUP_WORDS.get(tuple(group.split("+"))) if group else None
    return [word] if word else []


def segment_names(words: list[list[str]], segment_ids: list[str]) -> list[str]:
    """'Lapsed big-basket books and toys shoppers'; a name two segments would share gets their IDs.

    Several category words ('books-focused', 'toys-focused') read as one: 'books and toys'."""
    names = []
    for chosen in words:
        text = " ".join(_joined_focus(list(dict.fromkeys(chosen)))) or "typical"
        names.append(f"{text[0].upper()}{text[1:]} shoppers")
    counts = pd.Series(names).value_counts()
    return [f"{name} ({segment_id})" if counts[name] > 1 else name for name, segment_id in zip(names, segment_ids)]


def _joined_focus(words: list[str]) -> list[str]:
    focus = [word.removesuffix("-focused") for word in words if word.endswith("-focused")]
    if len(focus) < 2:
        return words
    first = next(index for index, word in enumerate(words) if word.endswith("-focused"))
    rest = [word for word in words if not word.endswith("-focused")]
    return [*rest[:first], f"{', '.join(focus[:-1])} and {focus[-1]}", *rest[first:]]


#: Features a lifecycle stage is judged on: the stage's word speaks for them in a segment's name.
_STAGE_FEATURES = frozenset({"recency_days", "churn_risk"})

_FEATURE_ORDER = {spec.name: index for index, spec in enumerate(FEATURES)}


def _modes(values: pa.ChunkedArray, labels: np.ndarray, k: int) -> list[str | None]:
    """The most common value of each of the `k` segments (ties to the first alphabetically; None
    without a value), counted on dictionary codes: no Python string per customer."""
    encoded = pc.dictionary_encode(values.combine_chunks())
    dictionary = np.array(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    present = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    counts = np.bincount(
        labels[present] * len(dictionary) + codes[present].astype(np.int64), minlength=k * len(dictionary)
    ).reshape(k, len(dictionary))
    modes: list[str | None] = []
    for segment in counts:
        if not len(dictionary) or segment.max() == 0:
            modes.append(None)
        else:
            modes.append(str(sorted(dictionary[segment == segment.max()])[0]))
    return modes


def _numeric_frame(profiles: pa.Table) -> pd.DataFrame:
    """Every clustered column plus every other numeric feature, in original units (nulls stay NaN)."""
    columns: dict[str, np.ndarray] = {}
    for spec in FEATURES:
        if spec.transform is None or spec.name not in profiles.column_names:
            continue
        if spec.is_share_map:
            if profiles[spec.name].null_count == profiles.num_rows:
                continue
            keys, block = _expand_share_map(profiles[spec.name])
            for index, key in enumerate(keys):
                columns[share_column(spec.name, key)] = block[:, index]
        else:
            columns[spec.name] = profiles[spec.name].to_numpy(zero_copy_only=False).astype(float)
    return pd.DataFrame(columns)


# ---------------------------------------------------------------------------- evaluation


def adjusted_rand_against_truth(
    assignments: pa.Table, truth: pa.Table, column: str = "segment_id"
) -> tuple[float, int]:
    """ARI between segments (or another label `column` of the assignments, such as behaviour_cluster) and
    the generating archetypes, over customers present in both."""
    joined = _joined_with_truth(assignments, truth, [column])
    return _ari(joined, column, None), joined.num_rows


def agreement_with_truth(assignments: pa.Table, truth: pa.Table) -> dict[str, float | int]:
    """The ARIs the clusters stage reports, from one join with the truth: of the behaviour clusters over every
    customer, over those that shaped them and over the rest, and of the segments over every customer."""
    joined = _joined_with_truth(assignments, truth, ["behaviour_cluster", "segment_id", "shaped_segments"])
    shaping = joined["shaped_segments"].to_numpy(zero_copy_only=False).astype(bool)
    return {
        "adjusted_rand_index": _ari(joined, "behaviour_cluster", None),
        "adjusted_rand_index_shaping_customers": _ari(joined, "behaviour_cluster", shaping),
        "adjusted_rand_index_other_customers": _ari(joined, "behaviour_cluster", ~shaping),
        "adjusted_rand_index_segments": _ari(joined, "segment_id", None),
        "customers_with_ground_truth": joined.num_rows,
    }


def _joined_with_truth(assignments: pa.Table, truth: pa.Table, columns: list[str]) -> pa.Table:
    return assignments.select(["canonical_id", *columns]).join(
        truth.select(["customer_id", "archetype"]), "canonical_id", "customer_id", join_type="inner"
    )


def _ari(joined: pa.Table, column: str, rows: np.ndarray | None) -> float:
    """ARI of `column` against the archetypes over `rows` of the joined table (all of them by default)."""
    if rows is not None:
        joined = joined.filter(pa.array(rows))
    if joined.num_rows == 0:
        return float("nan")
    # Integer codes: sklearn sorts its inputs, and sorting a million Python strings is slow.
    archetypes, labels = (
        pc.dictionary_encode(joined[name]).combine_chunks().indices.to_numpy(zero_copy_only=False)
        for name in ("archetype", column)
    )
    return float(adjusted_rand_score(archetypes, labels))


def segment_migration(previous: pa.Table | None, current: pa.Table, previous_as_of) -> pa.Table:
    """Customers per (previous segment, current segment); null on one side for arrivals and departures."""
    now = current.select(["canonical_id", "segment_id"]).to_pandas().rename(columns={"segment_id": "to_segment_id"})
    if previous is None:
        before = pd.DataFrame({"canonical_id": pd.Series(dtype=str), "from_segment_id": pd.Series(dtype=str)})
    else:
        before = (
            previous.select(["canonical_id", "segment_id"])
            .to_pandas()
            .rename(columns={"segment_id": "from_segment_id"})
        )
    moves = before.merge(now, on="canonical_id", how="outer")
    counts = (
        moves.groupby(["from_segment_id", "to_segment_id"], dropna=False)
        .size()
        .reset_index(name="customers")
        .sort_values(["from_segment_id", "to_segment_id"], na_position="first")
    )
    counts["previous_as_of"] = previous_as_of
    counts = counts.astype({"from_segment_id": object, "to_segment_id": object})
    counts = counts.where(counts.notna(), None)
    return conform(pa.Table.from_pandas(counts, preserve_index=False), SEGMENT_MIGRATION)
