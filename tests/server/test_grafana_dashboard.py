"""deploy/grafana-dashboard.json: importable, and every query names only series the app's /metrics exports."""

import asyncio
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from slmserve.engine.engine import RequestOutput
from slmserve.server.app import create_app
from slmserve.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Series names a family of each type puts on /metrics, beside samples actually present.
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus when it scrapes, not by the app


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold braces
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, range durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {
        m.group()
        for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", expr)
        if m.group() not in PROMQL_WORDS and not expr[m.end() :].lstrip().startswith("(")
    }


def grouping_labels(expr: str) -> set[str]:
    """The labels of every `by (...)` / `without (...)` in an expression."""
    groups = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
    return {label.strip() for group in groups for label in group.split(",")}


@pytest.fixture(scope="module")
def exported() -> tuple[set[str], set[str]]:
    """(series names, label names) on the app's /metrics, after one finished request so labelled series show."""
    app = create_app(Settings())  # no lifespan: nothing loads, /metrics still answers

    async def one_request():
        yield RequestOutput("r", "Hi", [1], 3, 1, queue_time=0.01)
        yield RequestOutput("r", "!", [2], 3, 2, finish_reason="stop")

    async def drain():
        async for _ in app.state.slm.metrics.observe(one_request()):
            pass

    asyncio.run(drain())
    text = TestClient(app).get("/metrics").text
    names, labels = set(), set()
    for family in text_string_to_metric_families(text):
        names |= {family.name} | {family.name + s for s in SUFFIXES.get(family.type, [])}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    return names, labels


def queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every panel target and every query variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":  # label_values(metric, label): the metric is what must exist
            found.append((f"${var['name']}", re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])[1]))
    return found


def test_the_dashboard_is_grafana_json_on_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 6
    for panel in panels:
        assert panel["datasource"] == DATASOURCE and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"] and all(t["datasource"] == DATASOURCE and t["refId"] for t in panel["targets"])


def test_every_query_names_only_metrics_and_labels_the_app_exports(exported):
    names, labels = exported
    read = set()
    for title, expr in queries():
        used = metric_names(expr)
        assert used, f"{title}: {expr} names no metric"
        assert used <= names, f"{title}: {sorted(used - names)} not on /metrics"
        assert grouping_labels(expr) <= labels | SCRAPE_LABELS, f"{title}: {expr}"
        read |= used
    wanted = {
        "slmserve_generation_tokens_total", "slmserve_requests_running", "slmserve_requests_waiting",
        "slmserve_time_to_first_token_seconds_bucket", "slmserve_inter_token_latency_seconds_bucket",
        "slmserve_requests_finished_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
    }  # fmt: skip
    assert wanted <= read


def test_the_name_check_would_catch_a_renamed_metric(exported):
    names, _ = exported
    expr = 'histogram_quantile(0.95, sum by (le) (rate(slmserve_ttft_bucket{job="a}b"}[$__rate_interval])))'
    assert metric_names(expr) == {"slmserve_ttft_bucket"} and not metric_names(expr) <= names
    assert metric_names("sum(rate(slmserve_generation_tokens_total[1m])) / 2") == {"slmserve_generation_tokens_total"}
