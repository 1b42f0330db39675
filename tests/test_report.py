"""`cdp report`: the static HTML report, opened in a real headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_cdp

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

# Appended to a copy of the report: measures what the browser laid out (the report itself has
# no script) and writes it into the page, which --dump-dom prints.
MEASURE = """
<script>
const charts = [...document.querySelectorAll('svg.chart')].map((svg) => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('rect.bar, polyline.series')].map((mark) => {
    const b = mark.getBBox();
    return {label: mark.dataset.label || mark.dataset.series,
            value: parseFloat(mark.dataset.value), width: b.width, height: b.height};
  });
  return {id: svg.dataset.chart, width: box.width, height: box.height, marks,
          points: svg.querySelectorAll('circle.point').length,
          empty: svg.querySelector('text.empty') !== null};
});
const resources = performance.getEntriesByType('resource').map((r) => r.name);
const out = document.createElement('pre');
out.id = 'render-check';
out.textContent = JSON.stringify({charts, resources});
document.body.appendChild(out);
</script>
"""


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def report(two_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cdp report.html"
    result = run_cdp(
        "report",
        "--out",
        str(out),
        "--warehouse",
        str(two_runs.warehouse),
        env=two_runs.env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(out) in result.stdout
    return out


@pytest.fixture(scope="module")
def rendered(report, tmp_path_factory) -> dict:
    """What headless Chromium laid out for every chart of the report."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: tests/system_packages.sh installs it"
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "measured.html"
    page.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    result = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="render-check">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(text.replace("&amp;", "&"))


def charts(rendered: dict) -> dict[str, dict]:
    return {chart["id"]: chart for chart in rendered["charts"]}


def test_the_report_loads_nothing_from_the_network(report, rendered):
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert rendered["resources"] == []


def test_every_chart_renders_with_a_size_in_the_browser(rendered):
    found = charts(rendered)
    assert set(found) == {
        "segment-sizes",
        "identifiers-by-type",
        "identifiers-per-customer",
        "held-out",
        "merges",
        "consent",
        "propensity-auc",
    }
    for chart in found.values():
        assert chart["width"] >= 600 and chart["height"] > 40, chart["id"]
        assert not chart["empty"] and chart["marks"], chart["id"]
        assert all(m["width"] > 0 for m in chart["marks"]), chart["id"]
        if chart["id"] != "segment-sizes":  # a line may be flat; a bar never is
            assert all(m["height"] > 0 for m in chart["marks"]), chart["id"]


def test_segment_sizes_over_time_draw_one_line_per_segment_across_both_runs(two_runs, rendered):
    chart = charts(rendered)["segment-sizes"]
    sizes = dict(
        query(two_runs.second.published, "select segment_name, member_count from cdp.segments")
    )
    assert {m["label"]: m["value"] for m in chart["marks"]} == sizes
    assert chart["points"] == 2 * len(sizes)  # two builds
    widths = {round(m["width"]) for m in chart["marks"]}
    assert (
        len(widths) == 1 and widths.pop() > 300
    )  # every line spans from the first run to the second


def test_bar_lengths_are_proportional_to_the_identity_statistics(two_runs, rendered):
    chart = charts(rendered)["identifiers-by-type"]
    counts = dict(
        query(
            two_runs.second.published,
            "select identifier_type, count(*) from cdp.customer_identifiers group by 1",
        )
    )
    assert {m["label"]: m["value"] for m in chart["marks"]} == counts
    longest = max(chart["marks"], key=lambda m: m["value"])
    for mark in chart["marks"]:
        expected = longest["width"] * mark["value"] / longest["value"]
        assert mark["width"] == pytest.approx(expected, rel=0.01, abs=1.0), mark["label"]
    merges = charts(rendered)["merges"]
    merged = query(two_runs.second.published, "select count(*) from cdp.customer_merges")[0][0]
    assert merged >= 1 and sum(m["value"] for m in merges["marks"]) == merged


def test_the_model_chart_shows_the_holdout_auc_against_the_baseline(two_runs, rendered):
    model, baseline = charts(rendered)["propensity-auc"]["marks"]
    latest = query(
        two_runs.second.published,
        "select holdout_auc, baseline_auc from cdp.predictive_model_runs order by built_at desc",
    )[0]
    assert (model["value"], baseline["value"]) == pytest.approx(latest)
    assert model["width"] > baseline["width"]


def test_the_report_needs_a_published_warehouse(tmp_path):
    result = run_cdp(
        "report", "--warehouse", str(tmp_path / "nowhere" / "cdp.duckdb"), env={}, timeout=120
    )
    assert result.returncode == 2
    assert "No published warehouse" in result.stderr and "cdp run" in result.stderr
