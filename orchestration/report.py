"""`cdp report`: one static HTML file with the state of the CDP, charts as inline SVG.

Read from the published copy of the warehouse. The page loads nothing (no scripts, fonts,
images or styles from elsewhere), so it opens offline and can be mailed or archived as is.
Every chart is an `<svg class="chart" data-chart="...">`: bars are `rect.bar`, lines
`polyline.series`, each mark carrying its value in `data-value`.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import duckdb

from orchestration.lookup import latest_propensity_run, propensity_summary
from orchestration.warehouse import connect_published

PALETTE = (
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c",
    "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
)  # fmt: skip
WIDTH = 720
BAR_HEIGHT = 22
LABEL_WIDTH = 220
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; color: #111827; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
.numbers { display: flex; gap: 1rem; flex-wrap: wrap; }
.number { border: 1px solid #e5e7eb; border-radius: .5rem; padding: .6rem 1rem; }
.number b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e5e7eb; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { display: block; margin: .5rem 0 1rem; overflow: visible; }
svg.chart text { font-size: 12px; fill: #374151; }
.note { color: #6b7280; font-size: .85rem; }
"""


@dataclass
class Bar:
    label: str
    value: float


def write_report(warehouse: Path, out: Path) -> Path:
    """Write the report for the published copy of `warehouse` to `out`; return `out`."""
    with connect_published(warehouse) as con:
        html = render_report(con)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


def render_report(con: duckdb.DuckDBPyConnection) -> str:
    sections = [
        _overview(con),
        _segments_section(con),
        _identity_section(con),
        _customers_section(con),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>CDP report</title><style>{STYLE}</style></head><body>"
        f"<h1>Customer data platform report</h1><p class='note'>Generated {generated} from the "
        "published warehouse.</p>" + "".join(sections) + "</body></html>\n"
    )


# --- sections --------------------------------------------------------------------------


def _overview(con: duckdb.DuckDBPyConnection) -> str:
    numbers = [
        ("customers", _scalar(con, "select count(*) from cdp.customers")),
        ("identifiers", _scalar(con, "select count(*) from cdp.customer_identifiers")),
        ("events", _scalar(con, "select count(*) from cdp.customer_events")),
        ("segments", _scalar(con, "select count(*) from cdp.segments")),
        ("builds", _scalar(con, "select count(distinct built_at) from cdp.segment_size_history")),
    ]
    cards = "".join(
        f"<div class='number'><b>{value:,}</b>{escape(label)}</div>" for label, value in numbers
    )
    return f"<div class='numbers'>{cards}</div>"


def _segments_section(con: duckdb.DuckDBPyConnection) -> str:
    history = con.execute(
        "select segment_name, built_at, member_count from cdp.segment_size_history "
        "order by built_at, segment_name"
    ).fetchall()
    builds = sorted({built_at for _, built_at, _ in history})
    series: dict[str, list[float | None]] = {}
    for name, built_at, count in history:
        series.setdefault(name, [None] * len(builds))[builds.index(built_at)] = count
    segments = _dicts(
        con,
        "select segment_name, member_count, entered_count, exited_count, definition, owner "
        "from cdp.segments order by member_count desc, segment_name",
    )
    rows = "".join(
        f"<tr><td>{escape(s['segment_name'])}</td><td class='n'>{s['member_count']:,}</td>"
        f"<td class='n'>{s['entered_count']:,}</td><td class='n'>{s['exited_count']:,}</td>"
        f"<td>{escape(s['definition'])}</td><td>{escape(s['owner'])}</td></tr>"
        for s in segments
    )
    table = (
        "<table><tr><th>segment</th><th>members</th><th>entered</th><th>exited</th>"
        f"<th>definition</th><th>owner</th></tr>{rows}</table>"
        "<p class='note'>Entered and exited: in the latest build, against the build before.</p>"
    )
    labels = [b.astimezone(UTC).strftime("%m-%d %H:%M") for b in builds]
    return (
        "<h2>Segments</h2>"
        + line_chart(
            "segment-sizes", "Segment sizes over time (members at each build)", labels, series
        )
        + table
    )


def _identity_section(con: duckdb.DuckDBPyConnection) -> str:
    by_type = _bars(
        con,
        "select identifier_type, count(*) from cdp.customer_identifiers group by 1 order by 2 desc",
    )
    per_customer = _bars(
        con,
        """
        select case when n >= 10 then '10 or more' else cast(n as varchar) end, count(*)
        from (select customer_id, count(*) as n from cdp.customer_identifiers group by 1)
        group by 1 order by min(n)
        """,
    )
    held_out = _bars(
        con, "select rule, count(*) from identity.identifiers_held_out group by 1 order by 2 desc"
    )
    changes = _bars(
        con,
        """
        select change || 's on ' || day, count(*) from (
            select change, strftime(timezone('UTC', changed_at), '%Y-%m-%d') as day
            from cdp.customer_merges
        ) group by change, day order by day, change
        """,
    )
    return (
        "<h2>Identity</h2>"
        + bar_chart("identifiers-by-type", "Identifiers by type", by_type)
        + bar_chart("identifiers-per-customer", "Customers by number of identifiers", per_customer)
        + bar_chart("held-out", "Identifiers held out of linking, by rule", held_out)
        + bar_chart("merges", "Customer id merges and splits, by day", changes)
    )


def _customers_section(con: duckdb.DuckDBPyConnection) -> str:
    consent = _bars(
        con,
        """
        select channel || ': ' || coalesce(state, 'no signal'), count(*) from (
            select 'email' as channel, email_consent as state from cdp.customers
            union all
            select 'sms', sms_consent from cdp.customers
        ) group by channel, state order by channel, state nulls last
        """,
    )
    run = latest_propensity_run(con)
    model = []
    if run is not None and run["holdout_auc"] is not None:
        model = [
            Bar("purchase propensity model", run["holdout_auc"]),
            Bar("baseline: " + run["baseline"].split(":")[0], run["baseline_auc"]),
        ]
    return (
        "<h2>Customers</h2>"
        + bar_chart("consent", "Consent by channel (the latest signal)", consent)
        + bar_chart(
            "propensity-auc",
            "Purchase propensity: AUC on the time-based holdout (0.5 is chance)",
            model,
            decimals=3,
        )
        + f"<p class='note'>{escape(propensity_summary(run))}</p>"
    )


# --- charts ----------------------------------------------------------------------------


def bar_chart(chart_id: str, title: str, bars: list[Bar], decimals: int = 0) -> str:
    """Horizontal bars, labels on the left, values at the bar ends."""
    if not bars:
        return _empty_chart(chart_id, title)
    top = max(bar.value for bar in bars) or 1.0
    span = WIDTH - LABEL_WIDTH - 80
    height = 30 + len(bars) * (BAR_HEIGHT + 8)
    marks = []
    for i, bar in enumerate(bars):
        y = 30 + i * (BAR_HEIGHT + 8)
        width = max(1.0, span * bar.value / top)
        value = f"{bar.value:,.{decimals}f}"
        marks.append(
            f"<text x='{LABEL_WIDTH - 8}' y='{y + 15}' text-anchor='end'>{escape(bar.label)}</text>"
            f"<rect class='bar' data-label='{escape(bar.label, quote=True)}' "
            f"data-value='{bar.value}' x='{LABEL_WIDTH}' y='{y}' width='{width:.2f}' "
            f"height='{BAR_HEIGHT}' fill='{PALETTE[i % len(PALETTE)]}'/>"
            f"<text x='{LABEL_WIDTH + width + 6:.2f}' y='{y + 15}'>{value}</text>"
        )
    return _svg(chart_id, title, height, "".join(marks))


def line_chart(
    chart_id: str, title: str, x_labels: list[str], series: dict[str, list[float | None]]
) -> str:
    """One line per series over evenly spaced x positions, with a legend below."""
    if not x_labels or not series:
        return _empty_chart(chart_id, title)
    left, right, top, plot_height = 60, 20, 30, 220
    top_value = max((v for values in series.values() for v in values if v is not None), default=0)
    top_value = top_value or 1
    step = (WIDTH - left - right) / max(1, len(x_labels) - 1)

    def x(i: int) -> float:
        return left + (i * step if len(x_labels) > 1 else (WIDTH - left - right) / 2)

    def y(value: float) -> float:
        return top + plot_height * (1 - value / top_value)

    parts = [
        f"<line x1='{left}' y1='{top + plot_height}' x2='{WIDTH - right}' "
        f"y2='{top + plot_height}' stroke='#9ca3af'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_height}' stroke='#9ca3af'/>",
        f"<text x='{left - 6}' y='{top + 4}' text-anchor='end'>{top_value:,.0f}</text>",
        f"<text x='{left - 6}' y='{top + plot_height + 4}' text-anchor='end'>0</text>",
    ]
    every = max(1, len(x_labels) // 8)
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            parts.append(
                f"<text x='{x(i):.2f}' y='{top + plot_height + 18}' text-anchor='middle'>"
                f"{escape(label)}</text>"
            )
    legend_y = top + plot_height + 44
    for n, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[n % len(PALETTE)]
        points = [(x(i), y(v), v) for i, v in enumerate(values) if v is not None]
        path = " ".join(f"{px:.2f},{py:.2f}" for px, py, _ in points)
        parts.append(
            f"<polyline class='series' data-series='{escape(name, quote=True)}' "
            f"data-value='{points[-1][2]}' points='{path}' fill='none' stroke='{color}' "
            "stroke-width='2'/>"
        )
        parts += [
            f"<circle class='point' cx='{px:.2f}' cy='{py:.2f}' r='3' fill='{color}'/>"
            for px, py, _ in points
        ]
        row, column = divmod(n, 3)
        lx, ly = left + column * 220, legend_y + row * 18
        parts.append(
            f"<rect x='{lx}' y='{ly - 10}' width='12' height='12' fill='{color}'/>"
            f"<text x='{lx + 18}' y='{ly}'>{escape(name)}</text>"
        )
    height = legend_y + ((len(series) + 2) // 3) * 18 + 10
    return _svg(chart_id, title, height, "".join(parts))


def _svg(chart_id: str, title: str, height: float, body: str) -> str:
    title_id = f"{chart_id}-title"
    return (
        f"<svg class='chart' data-chart='{chart_id}' role='img' aria-labelledby='{title_id}' "
        f"xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height:.0f}' "
        f"viewBox='0 0 {WIDTH} {height:.0f}'><title id='{title_id}'>{escape(title)}</title>"
        f"<text x='0' y='16' style='font-weight:600;font-size:14px'>{escape(title)}</text>"
        f"{body}</svg>"
    )


def _empty_chart(chart_id: str, title: str) -> str:
    return _svg(chart_id, title, 50, "<text x='0' y='40' class='empty'>No data yet.</text>")


# --- queries ---------------------------------------------------------------------------


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return con.execute(sql).fetchall()[0][0]


def _dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _bars(con: duckdb.DuckDBPyConnection, sql: str) -> list[Bar]:
    return [Bar(str(label), float(value)) for label, value in con.execute(sql).fetchall()]
