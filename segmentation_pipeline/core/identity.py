"""Merge-chain resolution: every customer ID to its canonical ID.

Merge records (old_id -> new_id at merged_at) form a graph. Every connected
component is one customer; its canonical ID is the ID that the component's
latest merge points to. The work is vectorized over the whole graph
(connected components with scipy.sparse.csgraph, pointer jumping for chain
depths), so millions of IDs resolve in seconds and a chain is never walked
one record at a time.

Real histories are messy, and a nightly run must survive them:

* cycles (A -> B -> A) are resolved by the same rule and reported;
* junk IDs ("unknown", "0", ...) and hubs linked to implausibly many IDs are
  never merged into a customer: their links are ignored and they are reported;
* chains deeper than a limit are reported.

In strict mode cycles and over-deep chains raise instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .errors import CircularMergeError, MergeChainTooDeepError
from .schemas import DEFAULT_JUNK_IDS, ID_HISTORY, MERGE_MAP, conform

EXAMPLES = 5


@dataclass(frozen=True)
class ResolverSettings:
    junk_ids: tuple[str, ...] = DEFAULT_JUNK_IDS
    #: An ID linked to more distinct IDs than this is a hub (a shared device, a test
    #: account), not a person.
    max_links_per_id: int = 50
    max_chain_depth: int = 20
    strict: bool = False


@dataclass(frozen=True)
class JunkId:
    id: str
    reason: str
    links: int


@dataclass
class MergeReport:
    records: int = 0
    distinct_links: int = 0
    ids: int = 0
    customers: int = 0
    merged_ids: int = 0
    largest_component: int = 0
    cycles: int = 0
    cycle_examples: list[list[str]] = field(default_factory=list)
    junk_ids: list[JunkId] = field(default_factory=list)
    ignored_junk_links: int = 0
    deepest_chain: int = 0
    too_deep_ids: int = 0
    too_deep_examples: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        return {
            "records": self.records,
            "distinct_links": self.distinct_links,
            "ids": self.ids,
            "customers": self.customers,
            "merged_ids": self.merged_ids,
            "largest_component": self.largest_component,
            "cycles": self.cycles,
            "cycle_examples": [" -> ".join(cycle) for cycle in self.cycle_examples],
            "junk_ids": [f"{junk.id!r} ({junk.reason}, {junk.links} links)" for junk in self.junk_ids[:20]],
            "junk_id_count": len(self.junk_ids),
            "ignored_junk_links": self.ignored_junk_links,
            "deepest_chain": self.deepest_chain,
            "too_deep_ids": self.too_deep_ids,
            "too_deep_examples": self.too_deep_examples,
        }


@dataclass
class MergeResolution:
    merge_map: pa.Table
    report: MergeReport


def resolve_merges(records: pa.Table, settings: ResolverSettings | None = None) -> MergeResolution:
    """Resolve merge records (ID_HISTORY schema) into the merge map (MERGE_MAP schema)."""
    settings = settings or ResolverSettings()
    report = MergeReport(records=records.num_rows)
    links = _distinct_links(conform(records, ID_HISTORY).to_pandas())
    report.distinct_links = len(links)
    ids, old_code, new_code = _encode(links)
    n = len(ids)
    report.ids = n
    if n == 0:
        return MergeResolution(MERGE_MAP.empty(), report)

    junk_reason, link_counts = _find_junk(ids, old_code, new_code, settings)
    usable = ~(junk_reason[old_code].astype(bool) | junk_reason[new_code].astype(bool))
    report.ignored_junk_links = int((~usable).sum())
    report.junk_ids = [
        JunkId(ids[i], junk_reason[i], int(link_counts[i])) for i in np.flatnonzero(junk_reason.astype(bool))
    ]
    links = links[usable].reset_index(drop=True)
    old_code, new_code = old_code[usable], new_code[usable]

    graph = coo_matrix((np.ones(len(links), dtype=np.int8), (old_code, new_code)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=True, connection="weak")
    component_size = np.bincount(component)[component]
    canonical = _canonical_codes(links, old_code, new_code, component, n)

    _, strong = connected_components(graph, directed=True, connection="strong")
    in_cycle = np.bincount(strong)[strong] > 1  # on a directed cycle: a strong component of 2+ IDs
    _report_cycles(report, ids, in_cycle, strong, settings)
    depth = _chain_depths(links, old_code, new_code, in_cycle, n)
    _report_depths(report, ids, depth, settings)

    report.customers = int(np.unique(canonical[junk_reason == ""]).size)
    report.merged_ids = int((canonical != np.arange(n)).sum())
    report.largest_component = int(component_size.max())
    table = pa.table(
        {
            "old_id": pa.array(ids, pa.string()),
            "canonical_id": pa.array(ids[canonical], pa.string()),
            "component_size": pa.array(component_size, pa.int64()),
            "chain_depth": pa.array(depth, pa.int64()),
            "in_cycle": pa.array(in_cycle),
            "is_junk": pa.array(junk_reason != ""),
            "junk_reason": pa.array(np.where(junk_reason == "", None, junk_reason), pa.string()),
        }
    )
    table = table.sort_by("old_id")
    return MergeResolution(conform(table, MERGE_MAP), report)


def _distinct_links(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (old_id, new_id) with its latest merged_at; self-links dropped."""
    links = records.assign(old_id=records["old_id"].str.strip(), new_id=records["new_id"].str.strip())
    links = links[links["old_id"] != links["new_id"]]
    links = links.sort_values(["merged_at", "new_id", "old_id"], kind="stable")
    return links.drop_duplicates(["old_id", "new_id"], keep="last").reset_index(drop=True)


def _encode(links: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, ids = pd.factorize(pd.concat([links["old_id"], links["new_id"]], ignore_index=True))
    ids = np.asarray(ids, dtype=object)
    return ids, codes[: len(links)], codes[len(links) :]


def _find_junk(
    ids: np.ndarray, old_code: np.ndarray, new_code: np.ndarray, settings: ResolverSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Reason per ID ("" for a real ID) and its number of distinct linked IDs."""
    n = len(ids)
    link_counts = np.bincount(old_code, minlength=n) + np.bincount(new_code, minlength=n)
    blocked = {junk.strip().lower() for junk in settings.junk_ids}
    reason = np.full(n, "", dtype=object)
    is_hub = link_counts > settings.max_links_per_id
    reason[is_hub] = f"linked to more than {settings.max_links_per_id} IDs"
    is_blocked = np.fromiter((str(i).lower() in blocked for i in ids), dtype=bool, count=n)
    reason[is_blocked] = "block list"
    return reason, link_counts


def _canonical_codes(
    links: pd.DataFrame, old_code: np.ndarray, new_code: np.ndarray, component: np.ndarray, n: int
) -> np.ndarray:
    """Per ID, the ID that its component's latest merge points to (ties: largest new_id, old_id)."""
    canonical = np.arange(n)
    if len(links) == 0:
        return canonical
    latest = pd.DataFrame(
        {
            "component": component[old_code],
            "merged_at": links["merged_at"].to_numpy(),
            "new_id": links["new_id"].to_numpy(),
            "old_id": links["old_id"].to_numpy(),
            "target": new_code,
        }
    )
    latest = latest.sort_values(["component", "merged_at", "new_id", "old_id"], kind="stable")
    latest = latest.drop_duplicates("component", keep="last")
    target_of_component = np.full(component.max() + 1, -1)
    target_of_component[latest["component"].to_numpy()] = latest["target"].to_numpy()
    merged = target_of_component[component] >= 0
    canonical[merged] = target_of_component[component[merged]]
    return canonical


def _report_cycles(
    report: MergeReport, ids: np.ndarray, in_cycle: np.ndarray, strong: np.ndarray, settings: ResolverSettings
) -> None:
    if not in_cycle.any():
        return
    members = pd.Series(ids[in_cycle]).groupby(strong[in_cycle]).agg(lambda group: sorted(group)[:10])
    report.cycles = len(members)
    report.cycle_examples = [list(cycle) for cycle in members.sort_values(key=lambda s: s.str[0]).head(EXAMPLES)]
    if settings.strict:
        example = " -> ".join(report.cycle_examples[0])
        raise CircularMergeError(
            f"{report.cycles} merge cycle(s) in the ID history, e.g. between {example}; "
            "run without strict mode to resolve them by the latest merge"
        )


def _chain_depths(
    links: pd.DataFrame, old_code: np.ndarray, new_code: np.ndarray, in_cycle: np.ndarray, n: int
) -> np.ndarray:
    """Hops from each ID along its latest outgoing merge to an ID that was never merged away.

    Pointer jumping: each pass doubles the distance every pointer covers, so a
    chain of length L takes log2(L) vectorized passes. Cycle members count as
    chain ends, which makes the pointer graph acyclic.
    """
    parent = np.arange(n)
    if len(links):
        order = np.lexsort((links["merged_at"].to_numpy(),))
        parent[old_code[order]] = new_code[order]  # later merges overwrite earlier ones
    parent[in_cycle] = np.flatnonzero(in_cycle)
    hops = (parent != np.arange(n)).astype(np.int64)
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            return hops
        hops = hops + hops[parent]
        parent = grandparent


def _report_depths(report: MergeReport, ids: np.ndarray, depth: np.ndarray, settings: ResolverSettings) -> None:
    report.deepest_chain = int(depth.max()) if len(depth) else 0
    too_deep = np.flatnonzero(depth > settings.max_chain_depth)
    report.too_deep_ids = int(too_deep.size)
    deepest_first = too_deep[np.argsort(-depth[too_deep], kind="stable")]
    report.too_deep_examples = [f"{ids[i]} ({depth[i]} hops)" for i in deepest_first[:EXAMPLES]]
    if settings.strict and too_deep.size:
        raise MergeChainTooDeepError(
            f"{too_deep.size} ID(s) sit on merge chains deeper than max_chain_depth="
            f"{settings.max_chain_depth}; deepest: {report.too_deep_examples[0]}"
        )
