"""Support for the browser tests: launch Debian's Chromium, seed log data, and in-page checks (names, contrast)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import push_json, stream

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path(os.environ.get("LOGLAKE_TEST_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps retrying Google services on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MINUTE = 60 * 10**9
SECOND = 10**9
TRACE_IDS = ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c", "5b8aa5a2d2c872e8321cf37308d69df2"]


def unavailable(reason: str) -> None:
    """Fail in CI (the browser tests are part of the contract there), skip elsewhere, with the reason."""
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests need Debian's chromium and the playwright package: {reason}")


def artifact_path(name: str, suffix: str = ".png") -> Path:
    """Return the path of a test artefact under test-artifacts/ui/, with a file-safe name."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + suffix)


@dataclass
class Corpus:
    """The log data pushed once per module, with the facts the tests assert on."""

    base_ns: int
    checkout: list[dict[str, Any]] = field(default_factory=list)
    worker_lines: list[str] = field(default_factory=list)
    bulk_count: int = 5000

    def checkout_with(self, **match: str) -> list[dict[str, Any]]:
        """Return the checkout entries whose fields equal `match`."""
        return [e for e in self.checkout if all(e["fields"].get(k) == v for k, v in match.items())]


def seed(client: httpx.Client, base_ns: int) -> Corpus:
    """Push JSON, logfmt and plain streams with timestamps in the last hour before `base_ns`."""
    corpus = Corpus(base_ns)
    levels = ["error", "warn", "info", "info", "info"]
    checkout = []
    for i in range(30):
        level = levels[i % 5]
        fields = {
            "level": level,
            "msg": f"order {1000 + i} payment {'failed' if level == 'error' else 'accepted'}",
            "trace_id": TRACE_IDS[i % 3],
            "amount": 10 + i,
        }
        metadata = {"pod": "checkout-7d9f", "request_id": f"req-{1000 + i}"}
        ts = base_ns - (45 - i) * MINUTE
        corpus.checkout.append({"ts": ts, "fields": fields, "metadata": metadata, "line": json.dumps(fields)})
        checkout.append((ts, json.dumps(fields), metadata))
    gateway = []
    for i in range(20):
        status, level = (404, "warn") if i % 4 == 3 else (200, "info")
        line = (
            f"level={level} method=GET path=/api/orders/{i} status={status} duration={5 + i}ms "
            f'request_id=req-{2000 + i} msg="request served"'
        )
        gateway.append((base_ns - (40 - i) * MINUTE, line))
    worker = []
    for i in range(1, 41):
        line = f"step {i:03d} processed batch of {i * 7} items"
        corpus.worker_lines.append(line)
        worker.append((base_ns - 30 * MINUTE + i * 10 * SECOND, line))
    span = 45 * MINUTE
    bulk = [
        (base_ns - 50 * MINUTE + i * span // corpus.bulk_count, f"level=info bulk line {i:05d} user=u{i % 97} ok")
        for i in range(corpus.bulk_count)
    ]
    batches = [
        stream({"app": "checkout", "env": "prod", "namespace": "shop"}, checkout),
        stream({"app": "gateway", "env": "prod", "namespace": "edge"}, gateway),
        stream({"app": "worker", "env": "staging", "namespace": "jobs"}, worker),
    ]
    for body in [batches, [stream({"app": "bulk", "env": "load"}, bulk)]]:
        r = push_json(client, body)
        assert r.status_code == 204, r.text
    return corpus


# Accessible name as a browser would compute it for the usual cases (aria-label, aria-labelledby, <label>, text,
# title); returns the outerHTML of every visible control that has none.
UNNAMED_CONTROLS_JS = """
() => {
  const visible = (el) => {
    const st = getComputedStyle(el);
    return st.display !== 'none' && st.visibility !== 'hidden' && el.getClientRects().length > 0;
  };
  const nameOf = (el) => {
    let name = (el.getAttribute('aria-label') || '').trim();
    if (!name && el.getAttribute('aria-labelledby')) {
      name = el.getAttribute('aria-labelledby').split(/\\s+/)
        .map((id) => (document.getElementById(id) || {}).textContent || '').join(' ').trim();
    }
    if (!name && el.labels && el.labels.length) name = Array.from(el.labels).map((l) => l.textContent).join(' ').trim();
    const textual = ['BUTTON', 'A', 'SUMMARY'].includes(el.tagName) || ['button', 'link', 'option', 'tab']
      .includes(el.getAttribute('role'));
    if (!name && textual) name = (el.textContent || '').trim();
    if (!name && el.tagName === 'INPUT' && ['submit', 'button', 'reset'].includes(el.type)) name = el.value;
    if (!name) name = (el.getAttribute('title') || '').trim();
    return name;
  };
  const selector = 'input:not([type=hidden]), select, textarea, button, a[href], [role=button], [role=checkbox], ' +
    '[role=switch], [role=tab], [tabindex]:not([tabindex="-1"])';
  return Array.from(document.querySelectorAll(selector))
    .filter((el) => visible(el) && !nameOf(el))
    .map((el) => el.outerHTML.slice(0, 200));
}
"""

# WCAG 2.x contrast of every visible text against its effective background (ancestor backgrounds blended
# over white). Colours go through a canvas so any CSS colour syntax (oklch, color-mix, ...) is understood.
CONTRAST_JS = """
() => {
  const cv = document.createElement('canvas');
  cv.width = cv.height = 1;
  const ctx = cv.getContext('2d', { willReadFrequently: true });
  const rgba = (c) => {
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = 'rgba(0, 0, 0, 0)';
    ctx.fillStyle = c;
    ctx.fillRect(0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2], d[3] / 255];
  };
  const blend = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3]));
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] > 0.99) break; }
    }
    let base = [255, 255, 255];
    for (let i = layers.length - 1; i >= 0; i--) base = blend(layers[i], base);
    return base;
  };
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const hasOwnText = (el) => Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim()) ||
    (['TEXTAREA', 'INPUT', 'SELECT'].includes(el.tagName) && (el.value || '').trim());
  const results = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!hasOwnText(el) || el.closest('[hidden], [inert]') || el.disabled) continue;
    if (['SCRIPT', 'STYLE', 'OPTION', 'TITLE'].includes(el.tagName)) continue;
    const st = getComputedStyle(el);
    if (st.display === 'none' || st.visibility === 'hidden' || !el.getClientRects().length) continue;
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= parseFloat(getComputedStyle(e).opacity);
    if (opacity < 0.05) continue;
    const rect = el.getBoundingClientRect();
    if (rect.bottom < 0 || rect.top > innerHeight || rect.width < 1 || rect.height < 1) continue;
    let fg = rgba(el instanceof SVGElement ? st.fill : st.color);
    if (fg[3] === 0) continue;
    const bg = background(el);
    fg = [...blend(fg, bg), 1];
    const size = parseFloat(st.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(st.fontWeight, 10) >= 700);
    const text = (el.value || el.textContent || '').trim().slice(0, 40);
    results.push({ tag: el.tagName.toLowerCase(), cls: String(el.className && el.className.baseVal !== undefined
      ? el.className.baseVal : el.className), text, ratio: Math.round(ratio(fg, bg) * 100) / 100,
      need: large ? 3 : 4.5, fg: fg.slice(0, 3).map(Math.round), bg: bg.map(Math.round) });
  }
  return results;
}
"""

# Describes the focused element as "role:name" so a focus order reads like a screen reader's.
FOCUSED_JS = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return 'body';
  const name = (el.getAttribute('aria-label') || (el.labels && el.labels[0] && el.labels[0].textContent) ||
    el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 60);
  const role = el.getAttribute('role') || el.tagName.toLowerCase();
  const inLines = el.closest('[role=list][aria-label="Log lines"]') ? 'line:' : '';
  return `${inLines}${role}:${name}`;
}
"""

# Event-loop delay probe and long-task observer, read back by RESPONSIVENESS_READ_JS.
RESPONSIVENESS_START_JS = """
() => {
  window.__probe = { delays: [], longtasks: [], stop: false };
  try {
    new PerformanceObserver((list) => list.getEntries().forEach((e) => window.__probe.longtasks.push(e.duration)))
      .observe({ type: 'longtask' });
  } catch (e) { /* no long-task support: the delay probe still measures */ }
  const tick = () => {
    const t = performance.now();
    setTimeout(() => {
      window.__probe.delays.push(performance.now() - t);
      if (!window.__probe.stop) setTimeout(tick, 50);
    }, 0);
  };
  tick();
}
"""
RESPONSIVENESS_READ_JS = "() => { window.__probe.stop = true; return window.__probe; }"

# The nearest scrollable ancestor of the log list (or the list itself), scrolled to its end.
SCROLL_LINES_TO_END_JS = """
(list) => {
  for (let e = list; e; e = e.parentElement) {
    const st = getComputedStyle(e);
    if (/(auto|scroll)/.test(st.overflowY) && e.scrollHeight > e.clientHeight) {
      e.scrollTop = e.scrollHeight;
      e.dispatchEvent(new Event('scroll'));
      return e.scrollHeight;
    }
  }
  window.scrollTo(0, document.documentElement.scrollHeight);
  return -1;
}
"""


def percentile(values: list[float], p: float) -> float:
    """Return the p-th percentile (0..100) of `values` by nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
