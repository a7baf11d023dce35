"""Data-quality checks over what is stored, computed in DuckDB over the Parquet files.

They read the written partitions (not the in-memory result of a run), so a
check verifies what analysts and downstream stages will actually see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from .errors import PipelineError
from .lineage import PreviousSnapshot, unchanged_since
from .llm.actionability import DIMENSIONS, Rubric, stored_rubric
from .llm.facts import stored_snapshot_facts
from .llm.questions import answers_faithful
from .reporting.publish import verify_report
from .schemas import (
    ACTIONABILITY,
    CLUSTERS,
    EVENT_TYPES,
    EXPLANATIONS,
    MERGE_MAP,
    PROFILES,
    QUARANTINE_EVENTS,
    RAW_EVENTS,
    ROBUSTNESS,
    SEGMENTS,
    VIABILITY,
    TableSpec,
)
from .warehouse import Warehouse, sql_string, utc_date_sql


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    summary: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventPartitionStats:
    """Counts over the stored raw_events (and their quarantine) of some days, in one pass."""

    rows: int
    null_customer_ids: int
    invalid_event_types: int
    outside_partition: int
    quarantined: int


def event_partition_stats(warehouse: Warehouse, days: Sequence[date]) -> EventPartitionStats:
    events = warehouse.parquet_relation(RAW_EVENTS, days)
    rejects = warehouse.parquet_relation(QUARANTINE_EVENTS, days)
    allowed = ", ".join(sql_string(t) for t in EVENT_TYPES)
    counts = (0, 0, 0, 0)
    quarantined = 0
    with warehouse.connect() as con:
        if events is not None:
            counts = con.execute(
                f"""
                SELECT count(*),
                    count(*) FILTER (WHERE customer_id IS NULL OR trim(customer_id) = ''),
                    count(*) FILTER (WHERE event_type IS NULL OR event_type NOT IN ({allowed})),
                    count(*) FILTER (WHERE {utc_date_sql('"timestamp"')} <> "date")
                FROM {events}
                """
            ).fetchone()
        if rejects is not None:
            quarantined = con.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]
    return EventPartitionStats(*(int(c) for c in counts), quarantined=int(quarantined))


def event_partition_stats_by_day(warehouse: Warehouse, days: Sequence[date]) -> dict[date, EventPartitionStats]:
    """The counts of `event_partition_stats` for each day apart (in one pass); zeros for a day without files."""
    events = warehouse.parquet_relation(RAW_EVENTS, days)
    rejects = warehouse.parquet_relation(QUARANTINE_EVENTS, days)
    allowed = ", ".join(sql_string(t) for t in EVENT_TYPES)
    counts: dict[date, tuple[int, ...]] = {}
    quarantined: dict[date, int] = {}
    with warehouse.connect() as con:
        if events is not None:
            for day, *row in con.execute(
                f"""
                SELECT "date", count(*),
                    count(*) FILTER (WHERE customer_id IS NULL OR trim(customer_id) = ''),
                    count(*) FILTER (WHERE event_type IS NULL OR event_type NOT IN ({allowed})),
                    count(*) FILTER (WHERE {utc_date_sql('"timestamp"')} <> "date")
                FROM {events} GROUP BY "date"
                """
            ).fetchall():
                counts[day] = tuple(int(c) for c in row)
        if rejects is not None:
            quarantined = dict(con.execute(f'SELECT "date", count(*) FROM {rejects} GROUP BY "date"').fetchall())
    return {
        day: EventPartitionStats(*counts.get(day, (0, 0, 0, 0)), quarantined=int(quarantined.get(day, 0)))
        for day in days
    }


def no_null_customer_ids(stats: EventPartitionStats) -> CheckOutcome:
    nulls = stats.null_customer_ids
    return CheckOutcome(nulls == 0, f"{nulls} stored events without a customer_id", {"violations": nulls})


def valid_event_types(stats: EventPartitionStats) -> CheckOutcome:
    invalid = stats.invalid_event_types
    return CheckOutcome(invalid == 0, f"{invalid} stored events with an unknown event_type", {"violations": invalid})


def timestamps_inside_partition(stats: EventPartitionStats) -> CheckOutcome:
    outside = stats.outside_partition
    return CheckOutcome(
        outside == 0, f"{outside} stored events whose UTC date is not their partition's", {"violations": outside}
    )


def quarantine_rate(stats: EventPartitionStats, max_rate: float) -> CheckOutcome:
    total = stats.rows + stats.quarantined
    rate = stats.quarantined / total if total else 0.0
    return CheckOutcome(
        rate <= max_rate,
        f"{stats.quarantined} of {total} input rows quarantined ({rate:.3%}; limit {max_rate:.3%})",
        {"quarantined": stats.quarantined, "input_rows": total, "rate": rate, "max_rate": max_rate},
    )


def every_day_has_input(rows_per_day: Mapping[date, int], expected: bool = True) -> CheckOutcome:
    """Every day of a run stored at least one event: a day without one means a missing or empty export."""
    empty = sorted(day for day, rows in rows_per_day.items() if not rows)
    listed = ", ".join(str(day) for day in empty[:10]) + (" ..." if len(empty) > 10 else "")
    if not empty and len(rows_per_day) == 1:
        summary = f"{next(iter(rows_per_day))} has {next(iter(rows_per_day.values())):,} events"
    elif not empty:
        summary = f"every one of the {len(rows_per_day)} days has events"
    elif len(rows_per_day) == 1:
        summary = f"no input for {listed}: no event of that day was stored"
    else:
        summary = f"no input for {len(empty)} of {len(rows_per_day)} days: {listed}"
    if empty and not expected:
        summary += " (days without input are expected: expect_input_every_day is off)"
    return CheckOutcome(not empty or not expected, summary, {"days_without_events": [str(day) for day in empty]})


def _stored_rule(
    warehouse: Warehouse, day: date, tables: dict[str, TableSpec], violations_sql: str, summary: str
) -> CheckOutcome:
    """Count the violations of a rule over stored partitions of `day` (each table under its alias)."""
    relations = {alias: warehouse.parquet_relation(spec, [day]) for alias, spec in tables.items()}
    missing = [tables[alias].name for alias, relation in relations.items() if relation is None]
    if missing:
        return CheckOutcome(False, f"no {', '.join(missing)} partition for {day}")
    ctes = ", ".join(f"{alias} AS (SELECT * FROM {relation})" for alias, relation in relations.items())
    with warehouse.connect() as con:
        violations = int(con.execute(f"WITH {ctes} {violations_sql}").fetchone()[0])
    return CheckOutcome(violations == 0, summary.format(violations), {"violations": violations})


def _merge_map_rule(warehouse: Warehouse, day: date, violations_sql: str, summary: str) -> CheckOutcome:
    """Count the violations of a rule over the stored merge map `m` of `day`; none means passed."""
    return _stored_rule(warehouse, day, {"m": MERGE_MAP}, violations_sql, summary)


def canonical_ids_map_to_themselves(warehouse: Warehouse, day: date) -> CheckOutcome:
    return _merge_map_rule(
        warehouse,
        day,
        """SELECT count(*) FROM (SELECT DISTINCT canonical_id FROM m) c
        LEFT JOIN m self ON self.old_id = c.canonical_id
        WHERE self.old_id IS NULL OR self.canonical_id <> c.canonical_id""",
        "{} canonical IDs that do not map to themselves (an unresolved chain)",
    )


def one_canonical_id_per_id(warehouse: Warehouse, day: date) -> CheckOutcome:
    return _merge_map_rule(
        warehouse,
        day,
        "SELECT count(*) FROM (SELECT old_id FROM m GROUP BY old_id "
        "HAVING count(DISTINCT canonical_id) > 1 OR count(*) > 1)",
        "{} IDs listed more than once or under two canonical IDs",
    )


def no_unresolved_chains(warehouse: Warehouse, day: date) -> CheckOutcome:
    """Applying the map twice must change nothing: map(map(x)) == map(x)."""
    return _merge_map_rule(
        warehouse,
        day,
        "SELECT count(*) FROM m a JOIN m b ON b.old_id = a.canonical_id WHERE b.canonical_id <> a.canonical_id",
        "{} IDs whose canonical ID is itself merged into another",
    )


def no_junk_merged(warehouse: Warehouse, day: date) -> CheckOutcome:
    """A junk ID is never merged into a customer, and no customer resolves to a junk ID."""
    return _merge_map_rule(
        warehouse,
        day,
        """SELECT count(*) FROM m
        WHERE (is_junk AND canonical_id <> old_id)
           OR (old_id <> canonical_id AND canonical_id IN (SELECT old_id FROM m WHERE is_junk))""",
        "{} IDs merged into or out of a junk ID",
    )


# ------------------------------------------------------------------ profiles and segments


def profiles_unique_per_customer(warehouse: Warehouse, day: date) -> CheckOutcome:
    return _stored_rule(
        warehouse,
        day,
        {"p": PROFILES},
        "SELECT count(*) FROM (SELECT canonical_id FROM p GROUP BY canonical_id HAVING count(*) > 1)",
        "{} canonical customers with more than one profile",
    )


def no_merged_away_ids(warehouse: Warehouse, day: date) -> CheckOutcome:
    """No profile belongs to an ID the merge map resolves to another customer, or to a junk ID."""
    return _stored_rule(
        warehouse,
        day,
        {"p": PROFILES, "m": MERGE_MAP},
        "SELECT count(*) FROM p JOIN m ON m.old_id = p.canonical_id WHERE m.canonical_id <> m.old_id OR m.is_junk",
        "{} profiles of merged-away or junk IDs",
    )


def every_profile_in_one_segment(warehouse: Warehouse, day: date) -> CheckOutcome:
    """Profiles and assignments list the same customers once each; every segment exists and has its size."""
    return _stored_rule(
        warehouse,
        day,
        {"p": PROFILES, "c": CLUSTERS, "s": SEGMENTS},
        """SELECT (SELECT count(*) FROM p ANTI JOIN c USING (canonical_id))
            + (SELECT count(*) FROM c ANTI JOIN p USING (canonical_id))
            + (SELECT count(*) FROM (SELECT canonical_id FROM c GROUP BY canonical_id HAVING count(*) > 1))
            + (SELECT count(*) FROM c ANTI JOIN s USING (segment_id))
            + (SELECT count(*) FROM s LEFT JOIN (SELECT segment_id, count(*) AS n FROM c GROUP BY segment_id) a
               USING (segment_id) WHERE coalesce(a.n, 0) <> s.size)""",
        "{} customers without exactly one segment, or segments whose size disagrees with their members",
    )


def previous_snapshot_unchanged(warehouse: Warehouse, used: PreviousSnapshot) -> CheckOutcome:
    """The previous snapshot a day's segment IDs were matched against is still the stored one: no
    earlier day's snapshot appeared or changed while the day was made."""
    unchanged, summary = unchanged_since(warehouse, used)
    return CheckOutcome(
        unchanged,
        summary,
        {
            "previous_snapshot": used.day.isoformat() if used.day else "none",
            "previous_segments_sha256": used.segments_sha256 or "none",
        },
    )


def robustness_scores_in_unit_interval(warehouse: Warehouse, day: date) -> CheckOutcome:
    """Every segment has its scores, each within [0, 1]."""
    scores = ("feature_drop_stability", "time_window_stability", "bootstrap_stability", "overall")
    # NULL or NaN means "not measured" (allowed, but not for the overall score).
    outside = " OR ".join(f"(NOT isnan({score}) AND NOT ({score} BETWEEN 0 AND 1))" for score in scores)
    return _stored_rule(
        warehouse,
        day,
        {"r": ROBUSTNESS, "s": SEGMENTS},
        f"""SELECT (SELECT count(*) FROM r WHERE {outside} OR overall IS NULL OR isnan(overall))
            + (SELECT count(*) FROM s ANTI JOIN r USING (segment_id))""",
        "{} segments without robustness scores or with a score outside [0, 1]",
    )


def every_segment_decided(warehouse: Warehouse, day: date) -> CheckOutcome:
    """Every segment is approved or rejected with reasons; strategic impact within [0, 1]."""
    return _stored_rule(
        warehouse,
        day,
        {"v": VIABILITY, "s": SEGMENTS},
        """SELECT (SELECT count(*) FROM v WHERE (NOT approved AND len(reasons) = 0)
                   OR NOT (strategic_impact BETWEEN 0 AND 1))
            + (SELECT count(*) FROM s ANTI JOIN v USING (segment_id))""",
        "{} segments without a decision, rejected without a reason, or with strategic impact outside [0, 1]",
    )


# ------------------------------------------------------------------ language-model answers


def _one_row_per_segment(alias: str) -> str:
    """SQL counting segments of `s` missing from `alias`, rows of unknown segments and segments listed twice."""
    return f"""((SELECT count(*) FROM s ANTI JOIN {alias} USING (segment_id))
        + (SELECT count(*) FROM {alias} ANTI JOIN s USING (segment_id))
        + (SELECT count(*) FROM (SELECT segment_id FROM {alias} GROUP BY segment_id HAVING count(*) > 1)))"""


def every_segment_evaluated(warehouse: Warehouse, day: date) -> CheckOutcome:
    """One actionability row per segment, every score within [0, 1] (or null: not measurable from the data)."""
    outside = " OR ".join(
        f"({dimension}_score IS NOT NULL AND NOT ({dimension}_score BETWEEN 0 AND 1))" for dimension in DIMENSIONS
    )
    return _stored_rule(
        warehouse,
        day,
        {"a": ACTIONABILITY, "s": SEGMENTS},
        f"SELECT (SELECT count(*) FROM a WHERE {outside}) + {_one_row_per_segment('a')}",
        "{} segments without exactly one evaluation, or with a score outside [0, 1] (null: not measurable)",
    )


def every_segment_explained(warehouse: Warehouse, day: date) -> CheckOutcome:
    """One explanation per segment, with a summary and a known confidence level."""
    return _stored_rule(
        warehouse,
        day,
        {"e": EXPLANATIONS, "s": SEGMENTS},
        f"""SELECT (SELECT count(*) FROM e WHERE trim(executive_summary) = ''
                   OR confidence_level NOT IN ('high', 'medium', 'low')) + {_one_row_per_segment("e")}""",
        "{} segments without exactly one explanation, or with an empty summary or unknown confidence level",
    )


def no_fallback_answers(warehouse: Warehouse, day: date, spec: TableSpec) -> CheckOutcome:
    """Every answer came from the configured provider; a fallback means the model's answer was unusable."""
    return _stored_rule(
        warehouse,
        day,
        {"t": spec},
        "SELECT count(*) FROM t WHERE source = 'fallback'",
        "{} answers replaced by the mock's (see fallback_reason)",
    )


def numbers_match_statistics(
    warehouse: Warehouse, day: date, spec: TableSpec, rubric: Rubric | None = None
) -> CheckOutcome:
    """Every stored answer was made from the stored snapshot's statistics, and quotes only their numbers.

    Fails when an answer quotes something it was not given, or when the snapshot
    changed after the answers were written (a re-run upstream without this stage).
    """
    try:
        facts = stored_snapshot_facts(warehouse, day)
        evaluations = warehouse.read_required(ACTIONABILITY, day)
        answers = evaluations if spec == ACTIONABILITY else warehouse.read_required(spec, day)
    except PipelineError as exc:
        return CheckOutcome(False, str(exc))
    problems = answers_faithful(facts, answers, spec.name, rubric or stored_rubric(warehouse, day), evaluations)
    summary = f"{len(problems)} answers made from other statistics or quoted numbers not in them" + (
        f", e.g. {problems[0]}" if problems else ""
    )
    return CheckOutcome(not problems, summary, {"violations": len(problems)})


# ------------------------------------------------------------------------- report


def report_complete(warehouse: Warehouse, day: date) -> CheckOutcome:
    """The stored report loads back, covers exactly the snapshot's segments and embeds every chart it lists."""
    try:
        segments = warehouse.read_required(SEGMENTS, day)
    except PipelineError as exc:
        return CheckOutcome(False, str(exc))
    names = dict(zip(segments["segment_id"].to_pylist(), segments["name"].to_pylist()))
    problems = verify_report(warehouse.report_dir(day), day, names)
    summary = f"{len(problems)} problems with the report" + (f", e.g. {problems[0]}" if problems else "")
    return CheckOutcome(not problems, summary, {"problems": len(problems), "segments": len(names)})
