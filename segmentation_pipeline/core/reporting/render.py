"""The report as Markdown (a summary to paste into a message) and as one self-contained HTML page."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from ..clv import MODEL_LABELS
from ..llm.actionability import DIMENSION_WORDS, NOT_MEASURABLE
from ..llm.facts import PurchaseRhythm, percent
from ..schemas import ACTIONABILITY_DIMENSIONS, ActionabilityAnswer
from .document import SegmentationReport, SegmentReport

HTML_FILE, MARKDOWN_FILE, JSON_FILE, PDF_FILE = "report.html", "report.md", "report.json", "summary.pdf"


# ------------------------------------------------------------------------ Markdown


def headline(report: SegmentationReport) -> str:
    """What to do today, in one sentence: the campaigns, whom they reach, what they should bring in."""
    totals, business, campaigns = report.totals, report.business, report.campaigns
    if not campaigns:
        return (
            f"No campaign to launch today: none of the {totals.segments} segments of {totals.customers:,} customers "
            "is both worth a campaign and clear enough to aim one at."
        )
    value = sum(item.expected_value for item in campaigns)
    cost = sum(item.cost for item in campaigns)
    segments = len({item.segment_id for item in campaigns})
    return (
        f"{len(campaigns)} campaign{'s' if len(campaigns) != 1 else ''} to launch in {segments} of "
        f"{totals.segments} segments, reaching {totals.targetable_customers:,} of {totals.customers:,} customers: "
        f"{business.money(value)} of extra margin expected for {business.money(cost)} of cost "
        f"({business.return_per_unit((value - cost) / cost if cost else None)})."
    )


def money(report: SegmentationReport, value: float | None, decimals: int = 0) -> str:
    return report.business.money(value, decimals)


def campaign_rows(report: SegmentationReport) -> list[list[str]]:
    """The campaigns to launch as the table shows them (the audience file apart)."""
    return [
        [
            f"{item.segment_id} {item.segment_name}",
            item.lifecycle or "n/a",
            item.offer,
            item.channel,
            item.timing,
            f"{(item.exported_customers if item.exported_customers is not None else item.customers):,}",
            money(report, item.expected_value),
            money(report, item.cost),
            item.confidence,
        ]
        for item in report.campaigns
    ]


CAMPAIGN_HEADERS = [
    "Segment",
    "Lifecycle",
    "Offer",
    "Channel",
    "Timing",
    "Customers",
    "Expected margin",
    "Cost",
    "Confidence",
]
_NUMERIC_CAMPAIGN_COLUMNS = {5, 6, 7}


def campaigns_table(report: SegmentationReport) -> str:
    """The campaigns to launch as a Markdown table ("" when there is none)."""
    if not report.campaigns:
        return ""
    lines = [
        "| " + " | ".join([*CAMPAIGN_HEADERS, "Audience file"]) + " |",
        "| " + " | ".join("---:" if index in _NUMERIC_CAMPAIGN_COLUMNS else "---" for index in range(10)) + " |",
    ]
    for item, row in zip(report.campaigns, campaign_rows(report)):
        lines.append(
            "| " + " | ".join([*(md_text(cell) for cell in row), md_text(item.audience_file or "not exported")]) + " |"
        )
    return "\n".join(lines)


def timing_note(report: SegmentationReport) -> str:
    business = report.business
    if report.exports:
        customers = (
            "Customers: those the exported audience file lists, the control group kept back; expected extra margin "
            "and cost are the segment's per customer for them."
        )
    else:
        customers = (
            "Customers: the whole segment (its audiences are not exported yet); expected extra margin and cost are "
            "the segment's, shared equally among its channels, which reach the same customers."
        )
    empty = report.campaigns_without_customers
    left = (
        f" Recommended but left without customers, as each customer is in one campaign only: {', '.join(empty)}."
        if empty
        else ""
    )
    return f"Times are in {business.zone_label}; money in {business.currency}. {customers}{left}"


_CHANGE_WORDS = {"grew": "grew", "shrank": "shrank", "steady": "held steady", "new": "is new", "gone": "is gone"}


def change_lines(report: SegmentationReport) -> list[str]:
    """What changed since the previous snapshot: segments that grew, shrank, appeared or went; who moved."""
    migration = report.migration
    if migration.previous_as_of is None:
        return [migration_line(report)]
    lines = [migration_line(report)]
    for kind in ("new", "gone", "grew", "shrank"):
        items = [item for item in report.changes if item.change == kind]
        if not items:
            continue
        listed = ", ".join(
            f"{item.segment_id} {item.name} ({_size_change(item.previous_customers, item.customers)})" for item in items
        )
        lines.append(f"{'Segments that ' if len(items) > 1 else 'Segment that '}{_CHANGE_WORDS[kind]}: {listed}.")
    steady = sum(1 for item in report.changes if item.change == "steady")
    if steady:
        lines.append(f"{steady} segment{'s' if steady > 1 else ''} held steady (within 2% of their size).")
    if report.flows:
        lines.append(
            "Largest moves between segments: "
            + "; ".join(
                f"{flow.customers:,} from {flow.from_segment_id} {flow.from_name} to {flow.to_segment_id} {flow.to_name}"
                for flow in report.flows
            )
            + "."
        )
    return lines


def _size_change(previous: int, current: int) -> str:
    if not previous:
        return f"{current:,} customers"
    if not current:
        return f"had {previous:,} customers"
    return f"{previous:,} to {current:,} customers, {(current - previous) / previous:+.0%}"


def decision(item: SegmentReport) -> str:
    """The segment's verdict in words: ready for a campaign, not worth one now, or not a clear target."""
    if item.targetable:
        return "campaign ready"
    if not item.viability.approved:
        return "not worth a campaign now"
    return "not a clear target"


def rejection_reasons(item: SegmentReport, report: SegmentationReport) -> str:
    """Why viability rejected the segment, in plain words with the segment's own numbers."""
    viability, business = item.viability, report.business
    phrases = {
        "min_segment_size": f"too few customers ({viability.size:,})",
        "max_segment_size_pct": f"too broad ({percent(viability.share)} of all customers)",
        "min_total_clv": f"too little value in total ({business.money(viability.total_clv)} expected)",
        "min_feature_stability": "its make-up changes when one feature is left out",
        "min_overall_robustness": "not stable enough to rely on",
        "min_expected_roi": f"a campaign would not pay back (it {business.return_per_unit(viability.expected_roi)})",
    }
    said = [phrases.get(name) for name in viability.failed_criteria]
    if not said or None in said:
        return "; ".join(viability.reasons)
    return "; ".join(said)


def stability_text(item: SegmentReport) -> str:
    """'highly stable (weakest test: time window 0.93)'."""
    weakest = item.weakest_test
    if weakest is None:
        return "unmeasured (no test could be run)"
    return f"{item.stability} (weakest test: {weakest[0]} {weakest[1]:.2f})"


def coverage_line(report: SegmentationReport) -> str:
    coverage = report.coverage
    possible = coverage.possible_days or coverage.window_days
    before = (
        f"; the window's first {coverage.window_days - possible} days lie before the data's first day"
        if possible < coverage.window_days
        else ""
    )
    return (
        f"Data: {coverage.days_with_events} of {possible} days with events "
        f"({coverage.window_first_day} to {coverage.window_last_day}{before}), {coverage.events_in_window:,} events, "
        f"{coverage.quarantined_events_in_window:,} rows quarantined; {coverage.customers_profiled:,} customers profiled."
    )


def notices(report: SegmentationReport) -> list[str]:
    """What a reader must know before trusting the numbers: shown first, above the headline."""
    coverage = report.coverage
    lines = []
    if not coverage.as_of_day_has_events:
        lines.append(
            f"No input for {report.as_of}: no event of that day was stored, so this snapshot stands on the days "
            "before it. Check that the day's export arrived; once it is ingested, build this snapshot again."
        )
    changed = coverage.days_changed_since_profiles
    if changed:
        listed = ", ".join(str(day) for day in changed[:10]) + (" ..." if len(changed) > 10 else "")
        lines.append(
            f"Events of {len(changed)} day{'s' if len(changed) > 1 else ''} changed after these profiles were built "
            f"({listed}): the numbers here are those the profiles saw; build this snapshot again to include them."
        )
    return lines


def lifecycle_text(mix: dict[str, float] | None) -> str:
    """'lapsed 86.0%, at risk 13.1%': the segment's customers by lifecycle stage, largest first."""
    if not mix:
        return "n/a"
    ordered = sorted(mix.items(), key=lambda item: -item[1])
    return ", ".join(f"{stage.replace('_', ' ')} {percent(share)}" for stage, share in ordered)


def value_lines(report: SegmentationReport) -> list[str]:
    """What CLV means here (horizon, discount, model) and why the model was chosen."""
    value = report.customer_value
    if value is None:
        return []
    model = MODEL_LABELS.get(value.model)
    source = (
        f"the {model} purchase model with Gamma-Gamma spend" if model else "a rule of thumb (no model could be fitted)"
    )
    lines = [
        f"Customer value (CLV) is each customer's expected spend over the next {value.horizon_days} days in "
        f"today's money ({report.business.currency}, {value.annual_discount_rate:.0%} a year discount), from {source}."
    ]
    if value.backtest_reason:
        lines.append(
            f"The model was chosen on the data's own holdout ({value.backtest_holdout_days} days after "
            f"{value.backtest_split_day}): {value.backtest_reason}"
        )
    return lines


def backtest_table(report: SegmentationReport) -> str:
    """The backtest's models and baselines: holdout error, error per customer and churn ranking."""
    value = report.customer_value
    if value is None or not value.backtest:
        return ""
    lines = [
        "| Model | Holdout purchases, error | Error per customer (purchase days) | Churn ranking (AUC) | Used |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in value.backtest:
        lines.append(
            f"| {md_text(row.label)} | {_number(row.error_percent, '{:+.1f}%')} | {_number(row.mae, '{:.2f}')} "
            f"| {_number(row.churn_auc, '{:.2f}')} | {'yes' if row.chosen else ''} |"
        )
    return "\n".join(lines)


def exports_line(report: SegmentationReport) -> str:
    """What left the engine: customers to contact, the control groups kept back, where the files are."""
    contacted = sum(item.customers for item in report.exports)
    kept = sum(item.control_customers for item in report.exports)
    share = kept / (contacted + kept) if contacted + kept else 0.0
    folder = Path(report.exports[0].folder).parent if report.exports else ""
    return (
        f"{len(report.exports)} campaigns exported with {contacted:,} customers to contact; {kept:,} customers "
        f"({percent(share)}) kept back as control groups, to measure each campaign's uplift against. "
        f"Files: {folder} (audience and changes per campaign, manifest.json)."
    )


def _export_rows(report: SegmentationReport) -> list[list[str]]:
    return [
        [
            item.campaign_key,
            f"{item.customers:,}",
            f"{item.control_customers:,}",
            f"{item.added:,}",
            f"{item.removed:,}",
            f"{item.moved_in + item.moved_out:,}",
        ]
        for item in report.exports
    ]


_EXPORT_HEADERS = ["Campaign", "To contact", "Control group", "Added", "Removed", "Moved between campaigns"]


def exports_table(report: SegmentationReport) -> str:
    lines = ["| " + " | ".join(_EXPORT_HEADERS) + " |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join([md_text(row[0]), *row[1:]]) + " |" for row in _export_rows(report)]
    return "\n".join(lines)


def _exports_html(report: SegmentationReport) -> str:
    header = "".join(
        f"<th{' class=num' if index else ''}>{escape(name)}</th>" for index, name in enumerate(_EXPORT_HEADERS)
    )
    rows = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if index else ''}>{escape(cell)}</td>" for index, cell in enumerate(row))
        + "</tr>"
        for row in _export_rows(report)
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


_SUMMARY_HEADERS = ["Segment", "Customers", "Share", "Mean CLV", "Return", "Stability", "Decision", "Confidence"]


def _summary_rows(report: SegmentationReport) -> list[list[str]]:
    return [
        [
            f"{item.segment_id} {item.name}",
            f"{item.segment.size:,}",
            percent(item.segment.share),
            money(report, item.segment.mean_clv),
            report.business.return_per_unit(item.viability.expected_roi).removeprefix("returns "),
            stability_text(item),
            decision(item),
            item.explanation.confidence_level,
        ]
        for item in report.segments
    ]


def summary_table(report: SegmentationReport) -> str:
    """One line per segment: what a marketer decides on."""
    lines = ["| " + " | ".join(_SUMMARY_HEADERS) + " |", "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    lines += ["| " + " | ".join(md_text(cell) for cell in row) + " |" for row in _summary_rows(report)]
    return "\n".join(lines)


def markdown(report: SegmentationReport) -> str:
    lines = [
        f"# Campaign brief: customer segments as of {report.as_of}",
        "",
        *(f"**{md_text(line)}**\n" for line in notices(report)),
        md_text(headline(report)),
        "",
        "## Campaigns to launch",
        "",
        campaigns_table(report) or "No campaign to launch today.",
        "",
        md_text(timing_note(report)),
        "",
        f"## What changed since {report.migration.previous_as_of or 'the last snapshot'}",
        "",
        *(f"- {md_text(line)}" for line in change_lines(report)),
        "",
        "## Segments",
        "",
        summary_table(report),
    ]
    for item in report.segments:
        lines += [
            "",
            f"**{md_text(f'{item.segment_id} {item.name}')}** ({item.segment.size:,} customers, {decision(item)}; "
            f"lifecycle: {lifecycle_text(item.segment.lifecycle_mix)})",
        ]
        lines += ["", md_text(item.explanation.executive_summary)]
        lines.append(f"- Actionability: {dimension_scores(item.actionability)}")
        for campaign in item.explanation.recommendations:
            lines.append(
                f"- Campaign: {md_text(campaign.channel)}, {md_text(campaign.timing)}: {md_text(campaign.offer)} "
                f"({campaign.audience_size:,} customers)"
            )
        if not item.viability.approved:
            lines.append(f"- Not worth a campaign now: {md_text(rejection_reasons(item, report))}")
        elif not item.actionability.actionable:
            lines.append(f"- {md_text(item.actionability.reason)}")
    lines += ["", "## Evidence", "", *(f"- {md_text(line)}" for line in evidence_lines(report))]
    lines += _campaign_uplift_markdown(report)
    if report.exports:
        lines += ["", "### Audiences exported", "", exports_line(report), "", exports_table(report)]
    if backtest_table(report):
        lines += ["", "### How well the churn and CLV models forecast", "", backtest_table(report)]
    lines += ["", f"Charts and the full report: {HTML_FILE}, {PDF_FILE}, {JSON_FILE}."]
    return "\n".join(lines) + "\n"


def evidence_lines(report: SegmentationReport) -> list[str]:
    """What the brief stands on: stability, customer value, data and who answered."""
    bands: dict[str, int] = {}
    for item in report.segments:
        bands[item.stability] = bands.get(item.stability, 0) + 1
    return [
        "Stability by each segment's weakest robustness test (time window, feature drop, bootstrap; 1 means the "
        "same customers every time): "
        + ", ".join(f"{count} {band}" for band, count in bands.items())
        + ". Highly stable from 0.85, stable from 0.75 (Hennig's bands); confidence follows the same thresholds.",
        *value_lines(report),
        coverage_line(report),
        f"Answers by {_answered_by(report)}.",
    ]


def uplift_lines(report: SegmentationReport) -> list[str]:
    """Which uplift each segment's expected ROI is priced at: one line per segment with a measured uplift,
    one for all the segments priced at the assumed uplift."""
    measured = [item for item in report.segments if item.viability.uplift_source == "measured"]
    assumed = [item for item in report.segments if item.viability.uplift_source == "prior"]
    lines = [f"{item.segment_id} {item.name}: return priced at {item.viability.uplift_basis}." for item in measured]
    if assumed:
        named = ", ".join(item.segment_id for item in assumed)
        lines.append(
            f"{'Every segment' if not measured else 'The other segments'} ({named}): return priced at the assumed "
            f"uplift of {assumed[0].viability.uplift_used:+.1%}, as no campaign of theirs has been measured yet."
        )
    return lines


#: Metrics of campaign_results as the report's table shows them.
_CONVERSION, _REVENUE = "conversion_rate", "revenue_per_customer"


def _campaign_rows(report: SegmentationReport) -> list[list[str]]:
    """One row per measured campaign: groups, what they bought, and the revenue uplift with its interval."""
    by_campaign: dict[str, dict[str, object]] = {}
    for result in report.campaign_results:
        by_campaign.setdefault(result.campaign_key, {})[result.metric] = result
    rows = []
    for key, metrics in by_campaign.items():
        conversion, revenue = metrics.get(_CONVERSION), metrics.get(_REVENUE)
        if conversion is None or revenue is None:
            continue
        relative = (
            f"{revenue.relative_uplift:+.1%} ({revenue.relative_ci_low:+.1%} to {revenue.relative_ci_high:+.1%})"
            if revenue.relative_ci_low is not None
            else "n/a"
        )
        rows.append(
            [
                key,
                f"{revenue.export_day} ({revenue.window_days} days to {revenue.measured_on})",
                f"{revenue.treatment_customers:,} / {revenue.control_customers:,}",
                f"{_number(conversion.treatment_value, '{:.1%}')} vs {_number(conversion.control_value, '{:.1%}')}",
                f"{money(report, revenue.treatment_value, 2)} vs {money(report, revenue.control_value, 2)}",
                relative,
                "yes" if revenue.significant else "no",
            ]
        )
    return rows


_CAMPAIGN_COLUMNS = (
    "Campaign",
    "Exported (measured over)",
    "Treated / control customers",
    "Bought: treated vs control",
    "Revenue per customer: treated vs control",
    "Revenue uplift (95% CI)",
    "Significant",
)


def campaign_results_table(report: SegmentationReport) -> str:
    """The last measured uplift of every campaign, as a Markdown table ("" when none was measured)."""
    rows = _campaign_rows(report)
    if not rows:
        return ""
    lines = ["| " + " | ".join(_CAMPAIGN_COLUMNS) + " |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    lines += ["| " + " | ".join(md_text(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _campaign_uplift_markdown(report: SegmentationReport) -> list[str]:
    lines = uplift_lines(report)
    if not lines and not report.campaign_results:
        return []
    table = campaign_results_table(report)
    return [
        "",
        "### Campaign uplift",
        "",
        *(f"- {md_text(line)}" for line in lines),
        "",
        table or "No campaign has been measured yet: every return is priced at the assumed uplift.",
    ]


def dimension_score(answer: ActionabilityAnswer, dimension: str) -> str:
    """A dimension's score as a reader sees it: two decimals, or not measurable (never 0)."""
    score = getattr(answer, f"{dimension}_score")
    return NOT_MEASURABLE if score is None else f"{score:.2f}"


def dimension_scores(answer: ActionabilityAnswer) -> str:
    """'WHAT 0.87, WHEN 0.34, HOW 0.50, WHO not measurable from this data'."""
    return ", ".join(
        f"{dimension.upper()} {dimension_score(answer, dimension)}" for dimension in ACTIONABILITY_DIMENSIONS
    )


def migration_line(report: SegmentationReport) -> str:
    migration = report.migration
    if migration.previous_as_of is None:
        return "This is the first snapshot: there is no earlier one to compare with."
    return (
        f"Since {migration.previous_as_of}: {migration.stayed:,} customers stayed in their segment, "
        f"{migration.moved:,} moved to another, {migration.arrived:,} arrived and {migration.left:,} left."
    )


def _answered_by(report: SegmentationReport) -> str:
    answers = report.answers
    sources = ", ".join(f"{count} {source}" for source, count in answers.sources.items())
    return (
        f"{', '.join(answers.providers)} ({', '.join(answers.models)}), prompt {', '.join(answers.prompt_versions)}; "
        f"answers: {sources}"
    )


#: Characters Markdown would read as markup (emphasis, code, links, HTML, table cells).
_MARKDOWN_SPECIAL = str.maketrans({character: "\\" + character for character in "\\`*[]<>|"})


def md_text(text: str) -> str:
    """Text from the data or the language model, shown as written in Markdown, on one line."""
    return " ".join(text.split()).translate(_MARKDOWN_SPECIAL)


# ---------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
p.lead { font-size: 1.1em; } .muted { color: #59636e; }
p.notice { background: #fff4e5; border-left: 4px solid #d97706; padding: 0.5em 0.8em; }
img { max-width: 100%; height: auto; background: white; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; background: white; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 6px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
.segment { background: white; border: 1px solid #d0d7de; border-left: 8px solid var(--colour);
           border-radius: 6px; padding: 12px 20px; margin: 16px 0; }
.segment h3 { margin: 4px 0 8px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 10px; font-size: 0.85em; margin-right: 6px; }
.yes { background: #dafbe1; color: #116329; } .no { background: #ffebe9; color: #a40e26; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 6px 18px; margin: 10px 0; }
.facts div span { display: block; font-size: 0.8em; color: #59636e; }
figure { margin: 24px 0; } figcaption { color: #59636e; margin-top: 4px; }
pre { background: white; border: 1px solid #d0d7de; padding: 8px; overflow-x: auto; }
.brief { background: white; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 20px 8px; }
.brief h1 { font-size: 1.6em; } .brief h2 { margin-top: 12px; border: none; }
table.campaigns { font-size: 0.88em; } table.campaigns th { background: #f0f3f6; }
.small { font-size: 0.85em; }
@media print {
  body { background: white; } main { max-width: none; padding: 0; }
  .brief { border: none; page-break-after: always; } .segment { page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def html(report: SegmentationReport, folder: Path) -> str:
    """The whole report on one page; every chart in `folder` is embedded as a data URI, so the file stands alone.

    The brief comes first, on the first screen (and the first printed page): what to launch. Then what
    changed, then the segments, then the evidence the brief stands on.
    """
    images = {chart.name: _data_uri(folder / chart.file) for chart in report.charts}
    charts = {chart.name: chart for chart in report.charts}
    previous = report.migration.previous_as_of
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Campaign brief: customer segments as of {report.as_of}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        '<div class="brief" id="brief">',
        f"<h1>Campaign brief <span class=muted>&middot; customer segments as of {report.as_of}</span></h1>",
        *(f'<p class="notice"><strong>{escape(line)}</strong></p>' for line in notices(report)),
        f'<p class="lead">{escape(headline(report))}</p>',
        '<h2 id="campaigns">Campaigns to launch</h2>',
        _campaigns_html(report),
        f'<p class="muted small">{escape(timing_note(report))} A printable one-page summary with the charts: '
        f'<a href="{PDF_FILE}">{PDF_FILE}</a>.</p>',
        "</div>",
        f'<h2 id="changes">What changed since {escape(str(previous or "the last snapshot"))}</h2>',
        "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in change_lines(report)) + "</ul>",
    ]
    if "segment_migration" in charts:
        chart = charts["segment_migration"]
        parts.append(_figure(chart.title, chart.description, images[chart.name]))
    parts += ['<h2 id="segments">Segments</h2>']
    if "dashboard" in charts:
        chart = charts["dashboard"]
        parts.append(_figure(chart.title, chart.description, images[chart.name]))
    parts += [_summary_html(report)]
    parts += [_segment_html(item, report) for item in report.segments]
    parts += ["<h3>Charts</h3>"]
    parts += [
        _figure(chart.title, chart.description, images[chart.name])
        for chart in report.charts
        if chart.name in _SEGMENT_CHARTS
    ]
    parts += [
        '<h2 id="evidence">Evidence</h2>',
        "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in evidence_lines(report)) + "</ul>",
    ]
    parts += [
        _figure(chart.title, chart.description, images[chart.name])
        for chart in report.charts
        if chart.name in _EVIDENCE_CHARTS
    ]
    parts += _campaign_uplift_html(report)
    if report.exports:
        parts += ["<h3>Audiences exported</h3>", f"<p>{escape(exports_line(report))}</p>", _exports_html(report)]
    if report.customer_value is not None and report.customer_value.backtest:
        parts += ["<h3>How well the churn and CLV models forecast</h3>", _backtest_html(report)]
    parts += [
        "<h3>Data coverage</h3>",
        _coverage_html(report),
        "<h3>Who answered, and the settings</h3>",
        _settings_html(report),
    ]
    parts.append(
        f'<p class="muted">Report version {escape(report.report_version)}; the full record is {JSON_FILE} '
        "beside this page.</p></main></body></html>"
    )
    return "\n".join(parts) + "\n"


#: Charts shown with the segments, and with the evidence; the dashboard and migration have their own places.
_SEGMENT_CHARTS = ("segment_sizes", "clv_by_segment", "feature_distributions", "actionability_heatmap")
_EVIDENCE_CHARTS = ("robustness_heatmap", "clv_tracking", "clv_calibration")


def _campaigns_html(report: SegmentationReport) -> str:
    if not report.campaigns:
        return "<p><b>No campaign to launch today.</b></p>"
    header = "".join(
        f"<th{' class=num' if index in _NUMERIC_CAMPAIGN_COLUMNS else ''}>{escape(name)}</th>"
        for index, name in enumerate([*CAMPAIGN_HEADERS, "Audience"])
    )
    rows = []
    for item, row in zip(report.campaigns, campaign_rows(report)):
        cells = [
            f'<td><a href="#{escape(item.segment_id)}">{escape(item.segment_id)}</a> {escape(item.segment_name)}</td>',
            *(
                f"<td{' class=num' if index in _NUMERIC_CAMPAIGN_COLUMNS else ''}>{escape(cell)}</td>"
                for index, cell in enumerate(row)
                if index
            ),
            f'<td><a href="{escape(item.audience_file)}">{escape(item.campaign_key)}</a></td>'
            if item.audience_file
            else "<td class=muted>not exported</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="campaigns"><tr>{header}</tr>{"".join(rows)}</table>'


def _summary_html(report: SegmentationReport) -> str:
    header = "".join(
        f"<th{' class=num' if index in (1, 2, 3, 4) else ''}>{escape(name)}</th>"
        for index, name in enumerate(_SUMMARY_HEADERS)
    )
    rows = []
    for item, row in zip(report.segments, _summary_rows(report)):
        rows.append(
            "<tr>"
            f'<td><a href="#{escape(item.segment_id)}">{escape(item.segment_id)}</a> {escape(item.name)}</td>'
            + "".join(f"<td class=num>{escape(cell)}</td>" for cell in row[1:5])
            + f"<td>{escape(row[5])}</td><td>{_badge(item.targetable, row[6], row[6])}</td><td>{escape(row[7])}</td>"
            "</tr>"
        )
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _segment_html(item: SegmentReport, report: SegmentationReport) -> str:
    # Imported here: the summary and Markdown need no matplotlib (every run's process imports this module).
    from .charts import segment_colour

    profile, viability, actionability = item.profile, item.viability, item.actionability
    business = report.business
    red, green, blue = (round(channel * 255) for channel in segment_colour(item.segment_id))
    facts = {
        "Customers": f"{profile.customers:,} ({percent(profile.share_of_customers)} of all)",
        "Mean CLV": f"{business.money(profile.mean_clv, 2)} (all customers: {business.money(profile.population_mean_clv, 2)})",
        "Share of total CLV": percent(profile.share_of_total_clv),
        "Mean orders": _number(profile.mean_orders, "{:,.1f}"),
        "Average order value": business.money(profile.avg_order_value, 2),
        "Lifecycle": lifecycle_text(item.segment.lifecycle_mix),
        "Churn risk": _number(profile.churn_risk, "{:.0%}")
        + (f" (all: {profile.population_churn_risk:.0%})" if profile.population_churn_risk is not None else ""),
        "Top categories": ", ".join(f"{label.label} {percent(label.share)}" for label in profile.categories) or "n/a",
        "Top channels": ", ".join(
            f"{label.label} {percent(label.share)}" + (f" ({label.lift:.1f}x the base)" if label.lift else "")
            for label in profile.channels
        )
        or "n/a",
        "Weekend share of activity": _number(profile.weekend_share, "{:.1%}"),
        "Day parts (UTC)": ", ".join(f"{part.label} {percent(part.share)}" for part in profile.day_parts) or "n/a",
        "Purchase rhythm": _rhythm_text(profile.rhythm),
    }
    scores = "".join(
        f"<tr><td>{escape(DIMENSION_WORDS[dimension].capitalize())}</td>"
        f"<td class=num>{escape(dimension_score(actionability, dimension))}</td>"
        f"<td>{escape(getattr(actionability, f'{dimension}_evidence'))}</td></tr>"
        for dimension in ACTIONABILITY_DIMENSIONS
    )
    campaigns = "".join(
        f"<li><b>{escape(campaign.channel)}</b>, {escape(campaign.timing)}: {escape(campaign.offer)} "
        f"({campaign.audience_size:,} customers). <span class=muted>{escape(campaign.rationale)}</span></li>"
        for campaign in item.explanation.recommendations
    )
    robustness = item.robustness
    tests = ", ".join(
        f"{name} {_number(value, '{:.2f}')}"
        for name, value in (
            ("time window", robustness.time_window_stability),
            ("feature drop", robustness.feature_drop_stability),
            ("bootstrap", robustness.bootstrap_stability),
        )
    )
    if viability.approved:
        value = (
            f"A campaign to the whole segment costs {business.money(viability.campaign_cost)} "
            f"({business.money(viability.campaign_cost / viability.size if viability.size else 0.0, 2)} per customer) "
            f"and {business.return_per_unit(viability.expected_roi)} in extra margin."
        )
    else:
        value = f"Not worth a campaign now: {rejection_reasons(item, report)}."
    return f"""
<section class="segment" id="{escape(item.segment_id)}" style="--colour: rgb({red}, {green}, {blue})">
<h3>{escape(item.segment_id)} {escape(item.name)}</h3>
<p>{_badge(item.targetable, decision(item), decision(item))}
<span class="muted">{escape(item.explanation.confidence_level)} confidence: {escape(item.explanation.confidence_justification)}</span></p>
<p>{escape(item.explanation.executive_summary)}</p>
<div class="facts">{"".join(f"<div><span>{escape(key)}</span>{escape(value)}</div>" for key, value in facts.items())}</div>
<p><b>Value</b>: {escape(value)}</p>
<p><b>Stability</b>: {escape(stability_text(item))}; {escape(tests)} (1 means the same customers every time).</p>
<table><tr><th>Can a campaign say</th><th class=num>Score (0-1)</th><th>Evidence</th></tr>{scores}</table>
<p><b>Verdict</b>: {escape(actionability.reason)}</p>
{f"<p><b>Campaigns</b></p><ul>{campaigns}</ul>" if campaigns else "<p><b>Campaigns</b>: none recommended.</p>"}
</section>"""


def _rhythm_text(rhythm: PurchaseRhythm | None) -> str:
    if rhythm is None:
        return "n/a"
    if not rhythm.repeat_buyer_share and rhythm.median_days_since_purchase is None:
        return "no purchase in the window"
    parts = [f"{percent(rhythm.repeat_buyer_share)} repeat buyers"]
    if rhythm.median_days_between_purchases is not None:
        parts.append(f"every {rhythm.median_days_between_purchases} days")
    if rhythm.median_days_since_purchase is not None:
        parts.append(f"last purchase {rhythm.median_days_since_purchase} days ago")
    return ", ".join(parts) + " (medians)"


def _campaign_uplift_html(report: SegmentationReport) -> list[str]:
    lines = uplift_lines(report)
    if not lines and not report.campaign_results:
        return []
    rows = _campaign_rows(report)
    header = "".join(f"<th>{escape(name)}</th>" for name in _CAMPAIGN_COLUMNS)
    table = (
        f"<table><tr>{header}</tr>"
        + "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        + "</table>"
        if rows
        else "<p>No campaign has been measured yet: every return is priced at the assumed uplift.</p>"
    )
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return ["<h3>Campaign uplift</h3>", f"<ul>{items}</ul>" if items else "", table]


def _backtest_html(report: SegmentationReport) -> str:
    value = report.customer_value
    rows = "".join(
        f"<tr><td>{escape(row.label)}{' (used)' if row.chosen else ''}</td>"
        f"<td class=num>{_number(row.error_percent, '{:+.1f}%')}</td><td class=num>{_number(row.mae, '{:.2f}')}</td>"
        f"<td class=num>{_number(row.churn_auc, '{:.2f}')}</td></tr>"
        for row in value.backtest
    )
    return (
        f"<p>Each model was fitted on the purchases up to {value.backtest_split_day} and asked to forecast the "
        f"next {value.backtest_holdout_days} days; the rules of thumb below them are the baselines.</p>"
        "<table><tr><th>Model</th><th class=num>Holdout purchases, error</th>"
        "<th class=num>Error per customer (purchase days)</th><th class=num>Churn ranking (AUC, 0.5 is chance)</th></tr>"
        f"{rows}</table>"
    )


def _coverage_html(report: SegmentationReport) -> str:
    coverage = report.coverage
    rows = {
        "Profile window": f"{coverage.window_first_day} to {coverage.window_last_day} ({coverage.window_days} days)",
        "Days with events": f"{coverage.days_with_events} of {coverage.possible_days or coverage.window_days} "
        f"({coverage.coverage:.1%} of the days that could have data)",
        "Days without events": f"{coverage.missing_days}"
        + (f": {', '.join(str(day) for day in coverage.missing_days_listed)}" if coverage.missing_days_listed else ""),
        "Events in the window": f"{coverage.events_in_window:,}",
        "Rows quarantined in the window": f"{coverage.quarantined_events_in_window:,}",
        "IDs in the merge history": f"{coverage.ids_in_merge_history:,} ({coverage.ids_merged_into_another:,} "
        "merged into another customer)",
        "Customers profiled / segmented": f"{coverage.customers_profiled:,} / {coverage.customers_segmented:,}",
        "Features without values": ", ".join(coverage.features_without_values) or "none",
    }
    return (
        "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows.items()) + "</table>"
    )


def _settings_html(report: SegmentationReport) -> str:
    settings = report.settings
    engine = {
        "Data folder": settings.data_dir,
        "Event source": settings.source,
        "Language model": _answered_by(report),
        "Business": f"money in {report.business.currency}, times in {report.business.zone_label}, owned channels: "
        + (", ".join(report.business.owned_channels) or "none"),
    }
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in engine.items())
    stages = "".join(
        f"<details><summary>{escape(stage.stage)}"
        f"{'' if stage.recorded else ' (no run recorded)'}</summary>"
        f"<pre>{escape(json.dumps(stage.config, indent=2, sort_keys=True))}</pre></details>"
        for stage in settings.stages
    )
    return f"<table>{rows}</table>{stages}"


def _figure(title: str, description: str, uri: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{escape(title)}: {escape(description)}">'
        f"<figcaption><b>{escape(title)}</b>. {escape(description)}</figcaption></figure>"
    )


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _badge(value: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"yes" if value else "no"}">{escape(yes if value else no)}</span>'


def _number(value: float | None, template: str) -> str:
    return "n/a" if value is None else template.format(value)
