"""The live dashboard in Debian's chromium while requests flow: figures move, charts draw, /metrics agrees."""

import os
import threading
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.integration.conftest import chat_body

# The README's picture is refreshed with SLMSERVE_DOCS_SCREENSHOTS=1; other runs leave docs/ alone.
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
FIGURES = ["tokens_per_s", "running", "waiting", "ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "cpu", "memory"]


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 440})
        yield page
        browser.close()


@pytest.fixture
def traffic(server):
    """Three clients sending chat requests back to back until the test ends; any failed request fails the test."""
    stop, failures = threading.Event(), []

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/chat/completions", json=chat_body("Tell me about dragons.", max_tokens=24))
                    r.raise_for_status()
                except httpx.HTTPError as exc:
                    failures.append(exc)
                    return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures


def test_dashboard_shows_live_figures_and_charts_while_requests_flow(server, traffic, page, tmp_path):
    page.goto(f"{server.url}/ui")
    page.click("#dashboard")  # the chat page links to it
    expect(page).to_have_url(f"{server.url}/ui/dashboard")
    expect(page.locator("#model")).to_have_text("smollm2-135m-instruct", timeout=15_000)  # a busy machine is slow
    # Every figure becomes a number (none left at "–"); the load makes tokens/s, running and the percentiles positive.
    # The figures are read in the same instant the condition holds: the page redraws them every second.
    positive = ["tokens_per_s", "running", "ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "cpu", "memory"]
    shown = page.wait_for_function(
        """([figures, positive]) => {
             const read = (id) => Number(document.getElementById(id).textContent);
             const values = Object.fromEntries(figures.map((id) => [id, read(id)]));
             const ready = figures.every((id) => !Number.isNaN(values[id])) && positive.every((id) => values[id] > 0)
               && Object.values(series).every((s) => s[0].filter(Number.isFinite).length >= 4);
             return ready && values;
           }""",
        arg=[FIGURES, positive],
        timeout=30_000,
    ).json_value()
    assert shown["ttft_p95"] >= shown["ttft_p50"] and shown["itl_p95"] >= shown["itl_p50"], shown
    assert shown["tokens_per_s"] < 10_000 and shown["running"] <= server.settings.max_running, shown
    rss = server.metric("process_resident_memory_bytes") / 2**20
    assert 0.75 * rss < shown["memory"] < 1.25 * rss, (shown, rss)
    # The charts drew lines in the series colour, not just the empty frame.
    for chart in ["tokens", "requests", "ttft", "itl", "cpu", "memory"]:
        pixels = page.evaluate(COLOURED_PIXELS, f"chart-{chart}")
        assert pixels > 4, (chart, pixels, page.evaluate("JSON.stringify(series)"))
    page.wait_for_function("series.tokens[0].length >= 15", timeout=30_000)  # enough history for a telling picture
    shot = (DOCS if os.environ.get("SLMSERVE_DOCS_SCREENSHOTS") else tmp_path) / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert 10_000 < shot.stat().st_size < 150_000


# Pixels of the first series' colour (--s0, a blue) on a chart canvas.
COLOURED_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 128 && data[i + 2] > data[i] + 60) n += 1;
  return n;
}"""


def test_percentiles_come_from_bucket_deltas_between_scrapes(server, page):
    """The page's own parser and quantile against hand-computed histogram_quantile values."""
    page.goto(f"{server.url}/ui/dashboard")
    older = 'h_bucket{le="0.1"} 5\nh_bucket{le="0.5"} 5\nh_bucket{le="1.0"} 5\nh_bucket{le="+Inf"} 5\n'
    newer = 'h_bucket{le="0.1"} 7\nh_bucket{le="0.5"} 11\nh_bucket{le="1.0"} 15\nh_bucket{le="+Inf"} 15\n'
    got = page.evaluate(
        """([older, newer]) => {
             const buckets = bucketDeltas(parseMetrics(older), parseMetrics(newer), "h_bucket");
             return [quantile(0.5, buckets), quantile(0.95, buckets), quantile(0.5, []),
                     quantile(0.95, [[0.1, 1], [Infinity, 4]])];
           }""",
        [older, newer],
    )
    # 10 new observations: 2 in (0, 0.1], 4 in (0.1, 0.5], 4 in (0.5, 1]. p50 is rank 5, 3/4 into (0.1, 0.5].
    assert got[0] == pytest.approx(0.4)
    assert got[1] == pytest.approx(0.5 + 0.5 * (9.5 - 6) / 4)
    assert got[2] is None  # nothing observed: no figure rather than a zero
    assert got[3] == pytest.approx(0.1)  # beyond the last finite bound, as Prometheus answers
