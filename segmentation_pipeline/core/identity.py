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
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .errors import CircularMergeError, MergeChainTooDeepError
from .schemas import DEFAULT_JUNK_IDS, ID_HISTORY, MERGE_MAP, conform

EXAMPLES = 5


@dataclass(frozen=True)
class ResolverSettings:
    junk_ids: tuple[str, ...] = DEFAULT_JUNK_IDS
    #: An ID linked to more distinct IDs than this is a hub (a shared device, a test
    #: account), not a person. A person with many devices and guest sessions can
    #: reach dozens; hubs reach hundreds or thousands.
    max_links_per_id: int = 100
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


def merges_in_effect(records: pa.Table, as_of: date) -> pa.Table:
    """Merge records in effect by the end of `as_of`: one filed early (local time) waits for its day."""
    end_of_day = datetime.combine(as_of + timedelta(days=1), time(), tzinfo=timezone.utc)
    merged_at = records.schema.field("merged_at").type
    return records.filter(pc.less(records["merged_at"], pa.scalar(end_of_day, merged_at)))


def resolve_merges(records: pa.Table, settings: ResolverSettings | None = None) -> MergeResolution:
    """Resolve merge records (ID_HISTORY schema) into the merge map (MERGE_MAP schema)."""
    settings = settings or ResolverSettings()
    report = MergeReport(records=records.num_rows)
    graph = _MergeGraph.from_records(conform(records, ID_HISTORY))
    n = graph.size
    report.ids = n
    if n == 0:
        return MergeResolution(MERGE_MAP.empty(), report)

    junk_reason, link_counts = _find_junk(graph, settings)
    is_junk = junk_reason != ""
    report.distinct_links = len(graph.old)
    graph = graph.without(is_junk[graph.old] | is_junk[graph.new])
    report.ignored_junk_links = report.distinct_links - len(graph.old)
    report.junk_ids = [JunkId(graph.id(i), junk_reason[i], int(link_counts[i])) for i in np.flatnonzero(is_junk)]

    adjacency = coo_matrix((np.ones(len(graph.old), dtype=np.int8), (graph.old, graph.new)), shape=(n, n)).tocsr()
    _, component = connected_components(adjacency, directed=True, connection="weak")
    component_size = np.bincount(component)[component]
    _, strong = connected_components(adjacency, directed=True, connection="strong")
    in_cycle = np.bincount(strong)[strong] > 1  # on a directed cycle: a strong component of 2+ IDs
    _report_cycles(report, graph, in_cycle, strong, settings)
    chain_end, depth = _follow_chains(graph, in_cycle)
    _report_depths(report, graph, depth, settings)
    canonical = _canonical_codes(graph, component, chain_end)

    report.customers = int(np.unique(canonical[~is_junk]).size)
    report.merged_ids = int((canonical != np.arange(n)).sum())
    report.largest_component = int(component_size.max())
    table = pa.table(
        {
            "old_id": graph.ids,
            "canonical_id": graph.ids.take(pa.array(canonical)),
            "component_size": pa.array(component_size, pa.int64()),
            "chain_depth": pa.array(depth, pa.int64()),
            "in_cycle": pa.array(in_cycle),
            "is_junk": pa.array(is_junk),
            "junk_reason": pa.array(np.where(is_junk, junk_reason, None), pa.string()),
        }
    )
    table = table.take(pa.array(graph.by_name))
    return MergeResolution(conform(table, MERGE_MAP), report)


@dataclass(frozen=True)
class _MergeGraph:
    """Distinct links between integer-coded IDs, each with its latest merge time.

    IDs are coded once; every later sort is over integers. `rank` is each ID's
    position in name order, used for deterministic tie-breaks.
    """

    ids: pa.StringArray
    rank: np.ndarray
    by_name: np.ndarray
    old: np.ndarray
    new: np.ndarray
    merged_at: np.ndarray

    @property
    def size(self) -> int:
        return len(self.ids)

    def id(self, code: int) -> str:
        return self.ids[int(code)].as_py()

    @classmethod
    def from_records(cls, records: pa.Table) -> _MergeGraph:
        old = pc.utf8_trim_whitespace(records.column("old_id").combine_chunks())
        new = pc.utf8_trim_whitespace(records.column("new_id").combine_chunks())
        encoded = pc.dictionary_encode(pa.concat_arrays([old, new]))
        ids = encoded.dictionary
        codes = encoded.indices.to_numpy().astype(np.int64)
        by_name = pc.sort_indices(ids).to_numpy()
        rank = np.empty(len(ids), dtype=np.int64)
        rank[by_name] = np.arange(len(ids))
        graph = cls(
            ids=ids,
            rank=rank,
            by_name=by_name,
            old=codes[: len(old)],
            new=codes[len(old) :],
            merged_at=records.column("merged_at").combine_chunks().cast(pa.int64()).to_numpy(),
        )
        return graph._distinct()

    def without(self, drop: np.ndarray) -> _MergeGraph:
        keep = ~drop
        return _MergeGraph(self.ids, self.rank, self.by_name, self.old[keep], self.new[keep], self.merged_at[keep])

    def _distinct(self) -> _MergeGraph:
        """One link per (old, new) with its latest time; self-links dropped."""
        not_self = self.old != self.new
        old, new, merged_at = self.old[not_self], self.new[not_self], self.merged_at[not_self]
        order = np.lexsort((merged_at, new, old))
        old, new, merged_at = old[order], new[order], merged_at[order]
        last = np.r_[(old[1:] != old[:-1]) | (new[1:] != new[:-1]), True] if len(old) else np.zeros(0, bool)
        return _MergeGraph(self.ids, self.rank, self.by_name, old[last], new[last], merged_at[last])

    def latest_first_order(self, group: np.ndarray) -> np.ndarray:
        """Link order by group, then merge time, then target and source name: the last is the latest."""
        return np.lexsort((self.rank[self.old], self.rank[self.new], self.merged_at, group))


def _find_junk(graph: _MergeGraph, settings: ResolverSettings) -> tuple[np.ndarray, np.ndarray]:
    """Reason per ID ("" for a real ID) and its number of distinct linked IDs."""
    n = graph.size
    low, high = np.minimum(graph.old, graph.new), np.maximum(graph.old, graph.new)
    pairs = np.unique(low * n + high)  # A->B and B->A are one neighbour
    link_counts = np.bincount(pairs // n, minlength=n) + np.bincount(pairs % n, minlength=n)
    blocked_names = pa.array(sorted({junk.strip().lower() for junk in settings.junk_ids}), pa.string())
    is_blocked = pc.is_in(pc.utf8_lower(graph.ids), value_set=blocked_names).to_numpy(zero_copy_only=False)
    reason = np.full(n, "", dtype=object)
    reason[link_counts > settings.max_links_per_id] = f"linked to more than {settings.max_links_per_id} IDs"
    reason[is_blocked] = "block list"
    return reason, link_counts


def _canonical_codes(graph: _MergeGraph, component: np.ndarray, chain_end: np.ndarray) -> np.ndarray:
    """Per ID, where its component's latest merge points to, followed to the end of that ID's chain.

    Following the chain matters when the latest merge points to an ID that was
    itself merged away earlier (a late cookie merged into a retired account):
    the customer stays under their current ID. Ties: largest new_id, then old_id.
    """
    canonical = np.arange(graph.size)
    if len(graph.old) == 0:
        return canonical
    link_component = component[graph.old]
    order = graph.latest_first_order(link_component)
    sorted_component = link_component[order]
    last = np.r_[sorted_component[1:] != sorted_component[:-1], True]
    target_of_component = np.full(component.max() + 1, -1)
    target_of_component[sorted_component[last]] = chain_end[graph.new[order][last]]
    merged = target_of_component[component] >= 0
    canonical[merged] = target_of_component[component[merged]]
    return canonical


def _report_cycles(
    report: MergeReport, graph: _MergeGraph, in_cycle: np.ndarray, strong: np.ndarray, settings: ResolverSettings
) -> None:
    if not in_cycle.any():
        return
    members = np.flatnonzero(in_cycle)
    members = members[np.lexsort((graph.rank[members], strong[members]))]
    labels = strong[members]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    report.cycles = len(starts)
    # Examples: the cycles whose first member comes first by name, ten members at most.
    first_members = members[starts]
    chosen = starts[np.argsort(graph.rank[first_members])[:EXAMPLES]]
    ends = np.r_[starts[1:], len(members)]
    end_of = dict(zip(starts.tolist(), ends.tolist()))
    report.cycle_examples = [
        [graph.id(code) for code in members[start : min(end_of[start], start + 10)]] for start in chosen.tolist()
    ]
    if settings.strict:
        example = " -> ".join(report.cycle_examples[0])
        raise CircularMergeError(
            f"{report.cycles} merge cycle(s) in the ID history, e.g. between {example}; "
            "run without strict mode to resolve them by the latest merge"
        )


def _follow_chains(graph: _MergeGraph, in_cycle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ID, the end of its chain of latest outgoing merges, and the hops to get there.

    Pointer jumping: each pass doubles the distance every pointer covers, so a
    chain of length L takes log2(L) vectorized passes. Cycle members count as
    chain ends, which makes the pointer graph acyclic.
    """
    n = graph.size
    parent = np.arange(n)
    if len(graph.old):
        order = graph.latest_first_order(graph.old)
        source = graph.old[order]
        last = np.r_[source[1:] != source[:-1], True]
        parent[source[last]] = graph.new[order][last]
    parent[in_cycle] = np.flatnonzero(in_cycle)
    hops = (parent != np.arange(n)).astype(np.int64)
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            return parent, hops
        hops = hops + hops[parent]
        parent = grandparent


def _report_depths(report: MergeReport, graph: _MergeGraph, depth: np.ndarray, settings: ResolverSettings) -> None:
    report.deepest_chain = int(depth.max()) if len(depth) else 0
    too_deep = np.flatnonzero(depth > settings.max_chain_depth)
    report.too_deep_ids = int(too_deep.size)
    deepest_first = too_deep[np.argsort(-depth[too_deep], kind="stable")]
    report.too_deep_examples = [f"{graph.id(i)} ({depth[i]} hops)" for i in deepest_first[:EXAMPLES]]
    if settings.strict and too_deep.size:
        raise MergeChainTooDeepError(
            f"{too_deep.size} ID(s) sit on merge chains deeper than max_chain_depth="
            f"{settings.max_chain_depth}; deepest: {report.too_deep_examples[0]}"
        )
