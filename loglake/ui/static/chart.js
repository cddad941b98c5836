// Metric results: a time-series chart (a line per series, legend, hover values) and a table.
import { axisTime, escapeHtml, formatNs, formatValue, msToNs, niceCeil } from "./format.js";
import { svgEl, ticks } from "./svg.js";

const HEIGHT = 300;
const PAD = { left: 56, right: 12, top: 10, bottom: 24 };
const COLOURS = 10;

/** `{a="b", c="d"}` for a metric's labels. */
export function seriesName(metric) {
  const parts = Object.keys(metric)
    .sort()
    .map((k) => `${k}="${metric[k]}"`);
  return `{${parts.join(", ")}}`;
}

/** Series {name, points: [[ms, value]]} of a Loki matrix result. */
export function fromMatrix(result) {
  return result.map((s) => ({
    name: seriesName(s.metric),
    points: s.values.map(([t, v]) => [Number(t) * 1000, Number(v)]),
  }));
}

/** The chart, its legend, tooltip and table, drawn into the given elements. */
export class MetricChart {
  constructor({ svg, legend, tooltip, table }) {
    this.svg = svg;
    this.legend = legend;
    this.tooltip = tooltip;
    this.table = table;
    this.series = [];
    svg.addEventListener("pointermove", (e) => this.hover(e));
    svg.addEventListener("pointerleave", () => this.unhover());
    new ResizeObserver(() => this.series.length && this.draw()).observe(svg.parentElement);
  }

  /** Show series over [startMs, endMs] with points `stepMs` apart. */
  show(series, startMs, endMs, stepMs) {
    Object.assign(this, { series, startMs, endMs, stepMs });
    this.draw();
    this.drawLegend();
    this.drawTable();
  }

  clear() {
    this.series = [];
    this.svg.replaceChildren();
    this.legend.replaceChildren();
    this.table.replaceChildren();
    this.unhover();
  }

  x(ms) {
    return PAD.left + ((ms - this.startMs) / (this.endMs - this.startMs)) * (this.width - PAD.left - PAD.right);
  }

  draw() {
    this.width = Math.max(300, this.svg.parentElement.clientWidth);
    const svg = this.svg;
    svg.setAttribute("viewBox", `0 0 ${this.width} ${HEIGHT}`);
    svg.setAttribute("width", this.width);
    svg.setAttribute("height", HEIGHT);
    let lo = 0;
    let hi = 0;
    for (const s of this.series)
      for (const [, v] of s.points)
        if (Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
    hi = niceCeil(hi);
    lo = lo < 0 ? -niceCeil(-lo) : 0;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    this.y = (v) => PAD.top + plotH - ((v - lo) / (hi - lo)) * plotH;
    const parts = [];
    for (const v of ticks(lo, hi, 4)) {
      parts.push(svgEl("line", { class: "grid", x1: PAD.left, x2: this.width - PAD.right, y1: this.y(v), y2: this.y(v) }));
      parts.push(svgEl("text", { class: "axis", x: PAD.left - 6, y: this.y(v) + 4, "text-anchor": "end" }, formatValue(v)));
    }
    const span = this.endMs - this.startMs;
    for (const t of ticks(this.startMs, this.endMs, Math.max(2, Math.floor(this.width / 140)))) {
      parts.push(svgEl("text", { class: "axis", x: this.x(t), y: HEIGHT - 6, "text-anchor": "middle" }, axisTime(t, span)));
    }
    this.series.forEach((s, i) => {
      const path = svgEl("path", { class: `series c${i % COLOURS}`, d: linePath(s.points, this, this.stepMs) });
      path.append(svgEl("title", {}, s.name));
      parts.push(path);
    });
    this.cursor = svgEl("line", { class: "cursor", y1: PAD.top, y2: HEIGHT - PAD.bottom, visibility: "hidden" });
    parts.push(this.cursor);
    svg.replaceChildren(...parts);
  }

  drawLegend() {
    this.legend.replaceChildren(
      ...this.series.map((s, i) => {
        const li = document.createElement("li");
        li.innerHTML = `<span class="swatch c${i % COLOURS}" aria-hidden="true"></span>${escapeHtml(s.name)}`;
        return li;
      }),
    );
  }

  drawTable() {
    const rows = this.series.map((s) => {
      const vals = s.points.map((p) => p[1]).filter(Number.isFinite);
      const last = s.points.length ? s.points[s.points.length - 1] : null;
      const cell = (v) => `<td class="num">${v === undefined || v === null ? "" : escapeHtml(formatValue(v))}</td>`;
      const mean = vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
      return (
        `<tr><th scope="row">${escapeHtml(s.name)}</th>${cell(last && last[1])}` +
        `${cell(vals.length ? Math.min(...vals) : null)}${cell(vals.length ? Math.max(...vals) : null)}${cell(mean)}` +
        `<td>${last ? escapeHtml(formatNs(msToNs(last[0]))) : ""}</td></tr>`
      );
    });
    this.table.innerHTML =
      `<thead><tr><th scope="col">Series</th><th scope="col">Last</th><th scope="col">Min</th>` +
      `<th scope="col">Max</th><th scope="col">Mean</th><th scope="col">Last at</th></tr></thead>` +
      `<tbody>${rows.join("")}</tbody>`;
  }

  hover(e) {
    if (!this.series.length) return;
    const box = this.svg.getBoundingClientRect();
    const px = ((e.clientX - box.left) * this.width) / box.width;
    const ms = this.startMs + ((px - PAD.left) / (this.width - PAD.left - PAD.right)) * (this.endMs - this.startMs);
    let best = null;
    for (const s of this.series)
      for (const [t] of s.points) if (best === null || Math.abs(t - ms) < Math.abs(best - ms)) best = t;
    if (best === null) return this.unhover();
    const cx = this.x(best);
    this.cursor.setAttribute("x1", cx);
    this.cursor.setAttribute("x2", cx);
    this.cursor.setAttribute("visibility", "visible");
    const rows = this.series
      .map((s, i) => [s, i, s.points.find((p) => p[0] === best)])
      .filter(([, , p]) => p)
      .sort((a, b) => b[2][1] - a[2][1])
      .slice(0, 20)
      .map(([s, i, p]) => `<li><span class="swatch c${i % COLOURS}" aria-hidden="true"></span>${escapeHtml(s.name)}: <strong>${escapeHtml(formatValue(p[1]))}</strong></li>`);
    this.tooltip.innerHTML = `<div class="tt-time">${escapeHtml(formatNs(msToNs(best)))}</div><ul>${rows.join("")}</ul>`;
    this.tooltip.hidden = false;
    const wrap = this.svg.parentElement.getBoundingClientRect();
    const left = e.clientX - wrap.left + 14;
    this.tooltip.style.left = `${Math.min(left, wrap.width - this.tooltip.offsetWidth - 4)}px`;
    this.tooltip.style.top = `${e.clientY - wrap.top + 14}px`;
  }

  unhover() {
    this.tooltip.hidden = true;
    if (this.cursor) this.cursor.setAttribute("visibility", "hidden");
  }
}

function linePath(points, chart, stepMs) {
  let d = "";
  let prev = null;
  let run = 0; // points in the current segment
  for (const [t, v] of points) {
    if (!Number.isFinite(v)) {
      prev = null;
      continue;
    }
    // A missing step is a gap in the line, not a straight jump across it.
    const start = prev === null || t - prev > stepMs * 1.5;
    if (start && run === 1) d += "h0.1"; // a lone point still shows as a dot (round line caps)
    if (start) run = 0;
    d += `${start ? "M" : "L"}${chart.x(t).toFixed(1)},${chart.y(v).toFixed(1)}`;
    prev = t;
    run++;
  }
  if (run === 1) d += "h0.1";
  return d || "M0,0";
}
