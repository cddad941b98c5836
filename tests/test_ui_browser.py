"""Browser tests of the web UI: Playwright drives Debian's Chromium against a real server with pushed logs."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LoglakeServer
from tests.helpers import now_ns, push_json, stream
from tests.ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CONTRAST_JS,
    FOCUSED_JS,
    MINUTE,
    RESPONSIVENESS_READ_JS,
    RESPONSIVENESS_START_JS,
    SCROLL_LINES_TO_END_JS,
    TRACE_IDS,
    UNNAMED_CONTROLS_JS,
    Corpus,
    artifact_path,
    percentile,
    seed,
    unavailable,
)

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError as exc:  # the test extra installs it; without it the tests fail in CI and skip locally
    Browser = Page = Any  # type: ignore[misc,assignment]
    PLAYWRIGHT_MISSING: str | None = f"cannot import playwright ({exc}); pip install -e '.[test]'"
else:
    PLAYWRIGHT_MISSING = None

TIMEOUT_MS = 8000


# ---- fixtures: one browser and one seeded server per module, a fresh page per test ---------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if PLAYWRIGHT_MISSING:
        unavailable(PLAYWRIGHT_MISSING)
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (scripts/test installs it with apt-get install chromium)")
    try:
        pw = sync_playwright().start()
    except Exception as exc:
        unavailable(f"playwright did not start: {exc}")
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception as exc:
        pw.stop()
        unavailable(f"{CHROMIUM} did not launch: {exc}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoglakeServer]:
    limits = {"reject_old_samples": False, "ingestion_rate_mb": 256, "ingestion_burst_size_mb": 512}
    server = LoglakeServer(tmp_path_factory.mktemp("ui") / "data", {"limits_config": limits}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def corpus(ui_server: LoglakeServer) -> Corpus:
    with ui_server.client() as client:
        return seed(client, now_ns())


@pytest.fixture
def page(browser: Browser, ui_server: LoglakeServer, corpus: Corpus, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new page in its own context (clean localStorage); a screenshot of its last state is kept as an artefact."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda err: pg.errors.append(str(err)))  # type: ignore[attr-defined]
    yield pg
    try:
        pg.screenshot(path=str(artifact_path(request.node.name)), full_page=True)
    finally:
        context.close()


def open_ui(page: Page, server: LoglakeServer, **params: str | int) -> None:
    """Open the page, with URL state when given, and wait until its editor is there."""
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    page.goto(server.url + "/" + (f"?{query}" if query else ""))
    expect(editor(page)).to_be_visible()


def editor(page: Page) -> Any:
    return page.get_by_label("LogQL query", exact=True)


def summary(page: Page) -> Any:
    return page.locator("#result-summary")


def log_lines(page: Page) -> Any:
    return page.get_by_role("list", name="Log lines").get_by_role("listitem")


def run_query(page: Page, query: str) -> None:
    """Type a query into the editor and run it with the Run query button."""
    editor(page).fill(query)
    page.keyboard.press("Escape")  # close a suggestion popup the typing may have opened
    page.get_by_role("button", name="Run query").click()


def expect_line_count(page: Page, n: int) -> None:
    expect(summary(page)).to_have_text(re.compile(rf"\b{n:,} lines?\b"))


def expand_line(page: Page, text: str) -> Any:
    """Expand the log line containing `text` and return its details region."""
    line = log_lines(page).filter(has_text=text).first
    button = line.locator("button[aria-expanded]").first
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    details = page.get_by_role("region", name="Line details")
    expect(details.first).to_be_visible()
    return details.first


def start_tail(page: Page, pusher: Pusher) -> None:
    """Start live tail and wait until the server streams to it (a pushed sentinel line shows)."""
    with page.expect_websocket(lambda ws: "/loki/api/v1/tail" in ws.url):
        page.get_by_role("button", name="Live tail").click()
    expect(page.get_by_role("button", name="Live tail")).to_have_attribute("aria-pressed", "true")
    lines = page.get_by_role("list", name="Log lines")
    # The socket exists before the server registers the tail: repeat the sentinel until one arrives.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pusher.push(["tail sentinel"])
        try:
            expect(lines.get_by_text("tail sentinel").first).to_be_visible(timeout=1000)
            return
        except AssertionError:
            continue
    raise AssertionError("no line pushed after starting live tail reached the page within 10 s")


def query_param(page: Page) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query).get("query", [""])[0]


class Pusher:
    """Pushes lines into one stream from a background thread at a target rate."""

    def __init__(self, server: LoglakeServer, labels: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=server.url, timeout=30.0)
        self.labels = labels

    def push(self, lines: list[str]) -> None:
        base = now_ns()
        r = push_json(self.client, [stream(self.labels, [(base + i, line) for i, line in enumerate(lines)])])
        assert r.status_code == 204, r.text

    def flood(self, prefix: str, per_second: int, seconds: float) -> threading.Thread:
        """Start pushing `per_second` lines/s in batches every 100 ms; the thread ends after `seconds`."""

        def run() -> None:
            batch = per_second // 10
            n = 0
            start = time.monotonic()
            while n < per_second * seconds:
                self.push([f"{prefix} {n + i:06d} level=info flood line" for i in range(batch)])
                n += batch
                sleep = start + n / per_second - time.monotonic()
                if sleep > 0:
                    time.sleep(sleep)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


# ---- the page is served from the package ------------------------------------------------------------------------


def test_page_loads_from_the_package_without_outside_requests(page: Page, ui_server: LoglakeServer) -> None:
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(ui_server.url) else None)
    open_ui(page, ui_server)
    expect(page.get_by_role("button", name="Run query")).to_be_visible()
    assert page.locator("html").get_attribute("data-theme") in ("light", "dark")
    assert httpx.get(ui_server.url + "/ui/app.js").status_code == 200
    assert outside == [], f"the page must work offline, but it requested {outside}"
    assert page.errors == [], page.errors  # type: ignore[attr-defined]


# ---- log queries ------------------------------------------------------------------------------------------------


def test_log_query_shows_lines_with_filter_terms_highlighted(page: Page, ui_server: LoglakeServer, corpus: Corpus):
    failed = corpus.checkout_with(level="error")
    open_ui(page, ui_server)
    run_query(page, '{app="checkout"} |= "payment failed"')
    expect_line_count(page, len(failed))
    expect(log_lines(page)).to_have_count(len(failed))
    newest = max(failed, key=lambda e: e["ts"])
    first = log_lines(page).first
    expect(first).to_contain_text(newest["fields"]["msg"])
    assert first.get_attribute("data-ts") == str(newest["ts"])
    marks = page.get_by_role("list", name="Log lines").locator("mark")
    expect(marks.first).to_have_text("payment failed")
    assert marks.count() >= len(failed)
    assert "payment+failed" in page.url.replace("%20", "+") or "payment failed" in query_param(page)


def test_expanded_line_shows_labels_metadata_and_parsed_fields(page: Page, ui_server: LoglakeServer, corpus: Corpus):
    entry = corpus.checkout_with(level="error")[0]
    open_ui(page, ui_server)
    run_query(page, '{app="checkout"}')
    expect_line_count(page, len(corpus.checkout))
    details = expand_line(page, entry["fields"]["msg"])
    for group in ["Stream labels", "Structured metadata", "Parsed fields"]:
        expect(details.get_by_text(group, exact=True)).to_be_visible()
    for name, value in [("app", "checkout"), ("env", "prod"), ("namespace", "shop")]:
        expect(details.get_by_role("button", name=f"Filter for {name}={value}")).to_be_visible()
    for name, value in entry["metadata"].items():
        expect(details.get_by_role("button", name=f"Filter for {name}={value}")).to_be_visible()
    for name in ["level", "msg", "amount"]:
        value = str(entry["fields"][name])
        expect(details.get_by_role("button", name=f"Filter for {name}={value}")).to_be_visible()
        expect(details.get_by_role("button", name=f"Filter out {name}={value}")).to_be_visible()

    details.get_by_role("button", name="Filter for level=error").click()
    expect(editor(page)).to_have_value(re.compile(r'level\s*=\s*"error"'))
    details = page.get_by_role("region", name="Line details").first
    if details.is_visible():
        details.get_by_role("button", name="Filter for env=prod").click()
    else:  # the filter re-ran the query: expand again to reach the stream labels
        details = expand_line(page, entry["fields"]["msg"])
        details.get_by_role("button", name="Filter for env=prod").click()
    expect(editor(page)).to_have_value(re.compile(r'\{[^}]*env\s*=\s*"prod"[^}]*\}.*level\s*=\s*"error"'))
    page.get_by_role("button", name="Run query").click()
    expect_line_count(page, len(corpus.checkout_with(level="error")))


def test_line_expands_from_the_keyboard_and_shows_its_context(page: Page, ui_server: LoglakeServer, corpus: Corpus):
    open_ui(page, ui_server)
    run_query(page, '{app="worker"} |= "step 020"')
    expect_line_count(page, 1)
    button = log_lines(page).first.locator("button[aria-expanded]").first
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    details = page.get_by_role("region", name="Line details").first
    details.get_by_role("button", name="Show context").click()
    for neighbour in ["step 018", "step 019", "step 021", "step 022"]:
        expect(page.get_by_text(re.compile(neighbour)).first).to_be_visible()
    expect(page.get_by_text(re.compile("step 020")).first).to_be_visible()


def test_trace_link_shows_exactly_the_lines_of_that_trace(page: Page, ui_server: LoglakeServer, corpus: Corpus):
    trace = TRACE_IDS[1]
    entry = corpus.checkout_with(trace_id=trace)[-1]
    open_ui(page, ui_server)
    run_query(page, '{app="checkout"}')
    details = expand_line(page, entry["fields"]["msg"])
    link = details.get_by_role("link", name=f"Show all lines with trace_id {trace}")
    expect(link).to_have_class(re.compile(r"\btrace-link\b"))
    request_link = details.get_by_role("link", name=f"Show all lines with request_id {entry['metadata']['request_id']}")
    expect(request_link).to_have_class(re.compile(r"\btrace-link\b"))
    link.click()
    expect(editor(page)).to_have_value(re.compile(rf'^\s*\{{app="checkout"\}}\s*\|=\s*"{trace}"\s*$'))
    expected = corpus.checkout_with(trace_id=trace)
    expect_line_count(page, len(expected))
    expect(log_lines(page)).to_have_count(len(expected))
    for i in range(len(expected)):
        expect(log_lines(page).nth(i)).to_contain_text(trace)
    assert re.fullmatch(rf'\{{app="checkout"\}}\s*\|=\s*"{trace}"', query_param(page).strip()), page.url


def test_server_error_for_a_bad_query_shows_next_to_the_query(page: Page, ui_server: LoglakeServer) -> None:
    bad = '{app="checkout"'
    with ui_server.client() as client:
        answer = client.get("/loki/api/v1/query_range", params={"query": bad, "since": "1h"})
    assert answer.status_code == 400
    open_ui(page, ui_server)
    run_query(page, bad)
    alert = page.get_by_role("alert")
    expect(alert).to_have_id("query-error")
    expect(alert).to_contain_text(answer.text.strip().splitlines()[0])
    run_query(page, '{app="checkout"}')
    expect(page.locator("#query-error")).to_have_text(re.compile(r"^\s*$"))


# ---- editor: completion, keyboard, history ----------------------------------------------------------------------


def test_autocompletion_offers_label_names_values_and_functions(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server)
    box = editor(page)
    box.fill("")
    box.press_sequentially("{")
    suggestions = page.get_by_role("listbox", name="Suggestions")
    expect(suggestions).to_be_visible()
    for name in ["app", "env", "namespace"]:
        expect(suggestions.get_by_role("option", name=re.compile(rf"^{name}\b"))).to_be_visible()
    box.press_sequentially("ap")
    expect(suggestions.get_by_role("option").first).to_contain_text("app")
    page.keyboard.press("Enter")
    expect(box).to_have_value(re.compile(r"^\{app"))
    if not re.search(r"=", box.input_value()):
        box.press_sequentially("=")
    expect(suggestions).to_be_visible()
    for value in ["checkout", "gateway", "worker"]:
        expect(suggestions.get_by_role("option", name=re.compile(value))).to_be_visible()
    for _ in range(6):  # ArrowDown until the highlighted option is "gateway"
        if "gateway" in (suggestions.locator("[role=option][aria-selected=true]").text_content() or ""):
            break
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    expect(box).to_have_value(re.compile(r'^\{app="gateway"'))
    page.keyboard.press("Escape")

    box.fill("")
    box.press_sequentially("count_")
    expect(suggestions.get_by_role("option", name=re.compile("count_over_time"))).to_be_visible()
    page.keyboard.press("Escape")
    expect(suggestions).to_be_hidden()


def test_ctrl_enter_runs_the_query_and_history_lists_it(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server)
    box = editor(page)
    box.fill('{app="gateway"}')
    box.press("Escape")
    box.press("Control+Enter")
    expect_line_count(page, 20)
    box.fill('{app="worker"} |= "step 00"')
    box.press("Escape")
    box.press("Meta+Enter")  # Cmd+Enter on a Mac
    expect_line_count(page, 9)
    page.get_by_role("button", name="Query history").click()
    history = page.get_by_role("listbox", name="Query history")
    expect(history).to_be_visible()
    expect(history.get_by_role("option", name='{app="gateway"}')).to_be_visible()
    expect(history.get_by_role("option", name='{app="worker"} |= "step 00"')).to_be_visible()


def test_label_browser_builds_a_selector(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server)
    page.get_by_role("button", name="Label browser").click()
    dialog = page.get_by_role("dialog", name="Label browser")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="app", exact=True).click()
    expect(dialog.get_by_role("checkbox", name="checkout", exact=True)).to_be_visible()
    dialog.get_by_role("checkbox", name="gateway", exact=True).check()
    dialog.get_by_role("button", name="Use selector").click()
    expect(dialog).to_be_hidden()
    expect(editor(page)).to_have_value(re.compile(r'\{\s*app\s*=~?\s*"gateway"\s*\}'))


# ---- URL state, theme, range ------------------------------------------------------------------------------------


def test_url_restores_the_view_and_runs_the_query(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server, query='{app="gateway"}', **{"from": "now-6h"}, to="now", direction="forward", limit=7)
    expect(editor(page)).to_have_value('{app="gateway"}')
    expect(page.get_by_label("Time range")).to_have_value("6h")
    expect(page.get_by_label("Direction")).to_have_value("forward")
    expect(page.get_by_label("Line limit")).to_have_value("7")
    expect_line_count(page, 7)
    expect(log_lines(page).first).to_contain_text("path=/api/orders/0 ")

    run_query(page, '{app="worker"}')
    expect_line_count(page, 7)
    assert query_param(page) == '{app="worker"}', page.url
    assert "direction=forward" in page.url and "limit=7" in page.url


def test_absolute_range_from_the_url_selects_custom(page: Page, ui_server: LoglakeServer, corpus: Corpus) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((corpus.base_ns - 45 * MINUTE) // 10**9 - 1))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((corpus.base_ns - 40 * MINUTE) // 10**9 + 1))
    open_ui(page, ui_server, query='{app="checkout"}', **{"from": start}, to=end, mode="logs")
    expect(page.get_by_label("Time range")).to_have_value("custom")
    expect(page.get_by_label("From", exact=True)).to_be_visible()
    expect(page.get_by_label("To", exact=True)).to_be_visible()
    expect_line_count(page, 6)  # one checkout line a minute from -45m to -40m


def test_theme_toggle_switches_and_is_remembered(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server)
    toggle = page.get_by_role("button", name="Dark theme")
    before = page.locator("html").get_attribute("data-theme")
    pressed = "true" if before == "dark" else "false"
    expect(toggle).to_have_attribute("aria-pressed", pressed)
    toggle.click()
    after = "light" if before == "dark" else "dark"
    expect(page.locator("html")).to_have_attribute("data-theme", after)
    expect(toggle).to_have_attribute("aria-pressed", "true" if after == "dark" else "false")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", after)


def test_histogram_shows_volume_by_level_and_drag_zooms(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server, query='{app=~"checkout|gateway"}')
    expect_line_count(page, 50)
    chart = page.get_by_role("img", name="Log volume")
    expect(chart).to_be_visible()
    bars = chart.locator("rect")
    expect(bars.first).to_be_attached()
    fills = set(bars.evaluate_all("rs => rs.map(r => getComputedStyle(r).fill)"))
    assert len(fills) >= 2, f"bars are not stacked by level (fills: {fills})"

    box = chart.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=8)
    page.mouse.up()
    expect(page.get_by_label("Time range")).to_have_value("custom")
    expect(page).to_have_url(re.compile(r"[?&]from=(?!now)"))


# ---- metric queries ---------------------------------------------------------------------------------------------


def test_metric_query_renders_a_chart_legend_and_table(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server)
    run_query(page, 'sum by (level) (count_over_time({app="checkout"} | json [5m]))')
    chart = page.get_by_role("img", name="Metric chart")
    expect(chart).to_be_visible()
    expect(chart.locator("path.series")).to_have_count(3)
    legend = page.get_by_role("list", name="Legend")
    expect(legend.get_by_role("listitem")).to_have_count(3)
    for level in ["error", "warn", "info"]:
        expect(legend).to_contain_text(level)
    table = page.get_by_role("table", name="Metric values")
    expect(table).to_be_visible()
    expect(table).to_contain_text("error")
    assert table.locator("tr").count() >= 4  # a header and one row per series at least

    box = chart.bounding_box()
    assert box is not None
    tooltip = page.get_by_role("tooltip")
    for fraction in [0.5, 0.4, 0.6, 0.3, 0.7]:
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        if tooltip.is_visible():
            break
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(re.compile(r"\d"))


# ---- live tail ---------------------------------------------------------------------------------------------------


def test_live_tail_shows_pushed_lines_and_pauses(page: Page, ui_server: LoglakeServer) -> None:
    pusher = Pusher(ui_server, {"app": "tailed", "env": "prod"})
    open_ui(page, ui_server, query='{app="tailed"}')
    start_tail(page, pusher)
    expect(page).to_have_url(re.compile(r"[?&]mode=tail\b"))
    pusher.push(["tail first line", "tail second line"])
    lines = page.get_by_role("list", name="Log lines")
    expect(lines.get_by_text("tail second line")).to_be_visible(timeout=5000)
    expect(lines.get_by_text("tail first line")).to_be_visible()
    expect(page.locator("#tail-rate")).to_have_text(re.compile(r"\d+(\.\d+)?\s*lines/s"))
    assert page.locator("#tail-rate").get_attribute("role") == "status"
    page.screenshot(path=str(artifact_path("live_tail_running")))

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    pusher.push(["tail while paused"])
    time.sleep(2.0)
    expect(lines.get_by_text("tail while paused")).to_have_count(0)
    page.get_by_role("button", name="Resume").click()
    pusher.push(["tail after resume"])
    expect(lines.get_by_text("tail after resume")).to_be_visible(timeout=5000)

    page.get_by_role("button", name="Live tail").click()
    expect(page.get_by_role("button", name="Live tail")).to_have_attribute("aria-pressed", "false")


# ---- responsiveness ----------------------------------------------------------------------------------------------


def test_five_thousand_lines_are_virtualised(page: Page, ui_server: LoglakeServer, corpus: Corpus) -> None:
    open_ui(page, ui_server, query='{app="bulk"}', limit=corpus.bulk_count)
    expect_line_count(page, corpus.bulk_count)
    expect(log_lines(page).first).to_contain_text(f"bulk line {corpus.bulk_count - 1:05d}")
    rows = log_lines(page).count()
    assert 0 < rows < 500, f"{rows} rows in the DOM for {corpus.bulk_count} lines: the list is not virtualised"
    started = time.perf_counter()
    page.get_by_role("list", name="Log lines").evaluate(SCROLL_LINES_TO_END_JS)
    expect(log_lines(page).filter(has_text="bulk line 00000")).to_be_visible()
    scrolled_ms = (time.perf_counter() - started) * 1000
    assert log_lines(page).count() < 500
    record("virtualised_list", {"rows_in_dom": rows, "scroll_to_end_ms": round(scrolled_ms, 1)})


def test_page_stays_responsive_while_tailing_1000_lines_per_second(page: Page, ui_server: LoglakeServer) -> None:
    pusher = Pusher(ui_server, {"app": "flood", "env": "load"})
    open_ui(page, ui_server, query='{app="flood"}')
    start_tail(page, pusher)
    expect(summary(page)).to_have_text(re.compile(r"\b[1-9][\d,]* lines?\b"))
    shown_before = int(re.sub(r"\D", "", summary(page).text_content() or "") or 0)
    page.evaluate(RESPONSIVENESS_START_JS)
    seconds, rate = 4, 1000
    flood = pusher.flood("flood", rate, seconds)
    box = editor(page)
    box.click()
    page.keyboard.press("End")
    keystrokes: list[float] = []
    rates: list[float] = []
    while flood.is_alive():
        started = time.perf_counter()
        page.keyboard.press("x")  # returns once the renderer has handled the key event
        keystrokes.append((time.perf_counter() - started) * 1000)
        text = page.locator("#tail-rate").text_content() or ""
        if m := re.search(r"([\d,.]+)\s*lines/s", text):
            rates.append(float(m.group(1).replace(",", "")))
        time.sleep(0.1)
    flood.join()
    page.screenshot(path=str(artifact_path("live_tail_flood")))
    last = f"flood {rate * seconds - 1:06d}"
    expect(page.get_by_role("list", name="Log lines").get_by_text(last)).to_be_visible(timeout=10_000)
    expect_line_count(page, shown_before + rate * seconds)  # no line lost on the way
    probe = page.evaluate(RESPONSIVENESS_READ_JS)
    numbers = {
        "keystroke_ms_p50": round(percentile(keystrokes, 50), 1),
        "keystroke_ms_p90": round(percentile(keystrokes, 90), 1),
        "keystroke_ms_max": round(max(keystrokes, default=0), 1),
        "event_loop_delay_ms_p95": round(percentile(probe["delays"], 95), 1),
        "event_loop_delay_ms_max": round(max(probe["delays"], default=0), 1),
        "longest_task_ms": round(max(probe["longtasks"], default=0), 1),
        "max_rate_shown": max(rates, default=0),
        "rows_in_dom": log_lines(page).count(),
    }
    record("tail_1000_lines_per_second", numbers)
    assert numbers["keystroke_ms_p90"] < 250, numbers
    assert numbers["event_loop_delay_ms_p95"] < 250, numbers
    assert numbers["longest_task_ms"] < 1000, numbers
    assert numbers["max_rate_shown"] >= 300, numbers
    assert numbers["rows_in_dom"] < 500, numbers


def record(name: str, numbers: dict[str, Any]) -> None:
    """Keep measured numbers next to the screenshots."""
    artifact_path(name, ".json").write_text(json.dumps(numbers, indent=2) + "\n")


# ---- accessibility -----------------------------------------------------------------------------------------------


def test_every_control_has_an_accessible_name(page: Page, ui_server: LoglakeServer, corpus: Corpus) -> None:
    open_ui(page, ui_server)
    run_query(page, '{app="checkout"}')
    expand_line(page, corpus.checkout[-1]["fields"]["msg"])
    unnamed = page.evaluate(UNNAMED_CONTROLS_JS)
    page.get_by_role("button", name="Label browser").click()
    expect(page.get_by_role("dialog", name="Label browser")).to_be_visible()
    page.get_by_role("dialog", name="Label browser").get_by_role("button", name="app", exact=True).click()
    expect(page.get_by_role("checkbox", name="checkout", exact=True)).to_be_visible()
    unnamed += page.evaluate(UNNAMED_CONTROLS_JS)
    assert unnamed == [], "controls without an accessible name:\n" + "\n".join(unnamed)


def test_tab_from_the_editor_visits_the_main_controls_in_order(page: Page, ui_server: LoglakeServer) -> None:
    open_ui(page, ui_server, query='{app="gateway"}')
    expect_line_count(page, 20)
    editor(page).focus()
    page.keyboard.press("Escape")
    order: list[str] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        order.append(page.evaluate(FOCUSED_JS))
    (artifact_path("focus_order", ".txt")).write_text("\n".join(order) + "\n")

    def first(pattern: str) -> int:
        for i, stop in enumerate(order):
            if re.search(pattern, stop):
                return i
        raise AssertionError(f"Tab never reached {pattern!r}; focus order: {order}")

    run = first(r"^button:Run query$")
    assert run <= 3, f"Run query should follow the editor closely; focus order: {order}"
    assert not order[0].startswith("textarea"), "Tab must leave the editor (no focus trap)"
    time_range, direction, limit = first(r"^select:Time range"), first(r"^select:Direction"), first(r"Line limit")
    assert time_range < direction < limit or time_range < limit < direction, order
    first(r"Live tail")
    first(r"Dark theme")
    first(r"^line:button")  # the log lines are reachable from the keyboard


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa(page: Page, ui_server: LoglakeServer, corpus: Corpus, theme: str) -> None:
    open_ui(page, ui_server)
    toggle = page.get_by_role("button", name="Dark theme")
    if page.locator("html").get_attribute("data-theme") != theme:
        toggle.click()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    run_query(page, '{app="checkout"} |= "payment"')
    expect_line_count(page, len(corpus.checkout))
    expand_line(page, corpus.checkout[-1]["fields"]["msg"])
    results = page.evaluate(CONTRAST_JS)
    checked = {r["tag"] for r in results}
    assert {"textarea", "button"} & checked, f"no text was checked: {results[:5]}"
    low = [r for r in results if r["ratio"] < r["need"]]
    artifact_path(f"contrast_{theme}", ".json").write_text(json.dumps(results, indent=1) + "\n")
    assert low == [], f"{len(low)} of {len(results)} texts below WCAG AA in the {theme} theme:\n" + "\n".join(
        json.dumps(r) for r in low[:20]
    )
