// The log volume histogram: bars per step stacked by level; dragging across it selects a time range.
import { axisTime, formatCount, formatValue, niceCeil } from "./format.js";
import { LEVELS } from "./levels.js";
import { svgEl, ticks } from "./svg.js";

const HEIGHT = 110;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

/** A histogram in `svg` (role=img); `onZoom(fromMs, toMs)` is called after a drag. */
export class Histogram {
  constructor(svg, legend, onZoom) {
    this.svg = svg;
    this.legend = legend;
    this.onZoom = onZoom;
    this.data = null;
    svg.addEventListener("pointerdown", (e) => this.dragStart(e));
    new ResizeObserver(() => this.data && this.draw()).observe(svg.parentElement);
  }

  /** Show counts: {startMs, endMs, stepMs, byLevel: Map level -> Map tsMs -> count}. */
  show(data) {
    this.data = data;
    this.draw();
  }

  clear() {
    this.data = null;
    this.svg.replaceChildren();
    this.legend.replaceChildren();
  }

  x(ms) {
    const { startMs, endMs } = this.data;
    return PAD.left + ((ms - startMs) / (endMs - startMs)) * (this.width - PAD.left - PAD.right);
  }

  msAt(px) {
    const { startMs, endMs } = this.data;
    const frac = (px - PAD.left) / (this.width - PAD.left - PAD.right);
    return startMs + Math.min(1, Math.max(0, frac)) * (endMs - startMs);
  }

  draw() {
    const svg = this.svg;
    this.width = Math.max(200, svg.parentElement.clientWidth);
    svg.setAttribute("viewBox", `0 0 ${this.width} ${HEIGHT}`);
    svg.setAttribute("width", this.width);
    svg.setAttribute("height", HEIGHT);
    const { byLevel, stepMs, startMs, endMs } = this.data;
    const times = new Set();
    for (const m of byLevel.values()) for (const t of m.keys()) times.add(t);
    const levels = LEVELS.filter((l) => byLevel.has(l));
    let max = 0;
    for (const t of times) max = Math.max(max, levels.reduce((s, l) => s + (byLevel.get(l).get(t) || 0), 0));
    const yMax = niceCeil(max);
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const y = (v) => PAD.top + plotH - (v / yMax) * plotH;
    const parts = [];
    for (const v of [0, yMax / 2, yMax]) {
      parts.push(svgEl("line", { class: "grid", x1: PAD.left, x2: this.width - PAD.right, y1: y(v), y2: y(v) }));
      parts.push(svgEl("text", { class: "axis", x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end" }, formatValue(v)));
    }
    const span = endMs - startMs;
    for (const t of ticks(startMs, endMs, Math.max(2, Math.floor(this.width / 140)))) {
      parts.push(svgEl("text", { class: "axis", x: this.x(t), y: HEIGHT - 5, "text-anchor": "middle" }, axisTime(t, span)));
    }
    for (const t of [...times].sort((a, b) => a - b)) {
      // A point at t counts (t - step, t]: draw it over that interval, clipped to the range.
      const x0 = this.x(Math.max(startMs, t - stepMs));
      const x1 = this.x(Math.min(endMs, t));
      const w = Math.max(1, x1 - x0 - 1);
      let acc = 0;
      for (const level of levels) {
        const count = byLevel.get(level).get(t) || 0;
        if (!count) continue;
        const rect = svgEl("rect", { class: `bar lvl-${level}`, x: x0, width: w, y: y(acc + count), height: y(acc) - y(acc + count) });
        rect.append(svgEl("title", {}, `${axisTime(t - stepMs, span)}–${axisTime(t, span)} ${level}: ${formatCount(count)}`));
        parts.push(rect);
        acc += count;
      }
    }
    svg.replaceChildren(...parts);
    this.legend.replaceChildren(
      ...levels.map((l) => {
        const li = document.createElement("li");
        li.className = `lvl-${l}`;
        li.innerHTML = `<span class="swatch" aria-hidden="true"></span>${l}`;
        return li;
      }),
    );
  }

  dragStart(e) {
    if (!this.data || e.button !== 0) return;
    e.preventDefault();
    const box = this.svg.getBoundingClientRect();
    const scale = this.width / box.width;
    const px = (ev) => (ev.clientX - box.left) * scale;
    const x0 = px(e);
    const sel = svgEl("rect", { class: "selection", x: x0, y: PAD.top, width: 0, height: HEIGHT - PAD.top - PAD.bottom });
    this.svg.append(sel);
    this.svg.setPointerCapture(e.pointerId);
    const move = (ev) => {
      const x1 = px(ev);
      sel.setAttribute("x", Math.min(x0, x1));
      sel.setAttribute("width", Math.abs(x1 - x0));
    };
    const up = (ev) => {
      this.svg.removeEventListener("pointermove", move);
      this.svg.removeEventListener("pointerup", up);
      sel.remove();
      const x1 = px(ev);
      if (Math.abs(x1 - x0) >= 4) this.onZoom(this.msAt(Math.min(x0, x1)), this.msAt(Math.max(x0, x1)));
    };
    this.svg.addEventListener("pointermove", move);
    this.svg.addEventListener("pointerup", up);
  }
}

/** A step in seconds that gives at most about `bars` bars over a span of `spanMs`. */
export function histogramStep(spanMs, bars = 100) {
  const want = spanMs / 1000 / bars;
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  return steps.find((s) => s >= want) || Math.ceil(want / 86400) * 86400;
}
