// Formatting of times, numbers and HTML text shared by the views.

/** Escape text for use inside HTML. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Compare two non-negative integer strings (ns timestamps) numerically. */
export function compareNs(a, b) {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Milliseconds since the epoch of an ns timestamp string. */
export function nsToMs(ns) {
  return Number(BigInt(ns) / 1000000n);
}

/** ns timestamp string of milliseconds since the epoch. */
export function msToNs(ms) {
  return (BigInt(Math.round(ms)) * 1000000n).toString();
}

/** ns timestamp string plus an integer number of ns. */
export function addNs(ns, delta) {
  return (BigInt(ns) + BigInt(delta)).toString();
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** Local time of an ns timestamp as `YYYY-MM-DD HH:MM:SS.mmm`. */
export function formatNs(ns) {
  const d = new Date(nsToMs(ns));
  return `${formatDate(d)} ${formatClock(d)}.${pad(d.getMilliseconds(), 3)}`;
}

/** Local date as `YYYY-MM-DD`. */
export function formatDate(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Local clock time as `HH:MM:SS`. */
export function formatClock(d) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Short axis label for a time in ms, precise enough for a span of `spanMs`. */
export function axisTime(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400000) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (spanMs > 300000) return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return formatClock(d);
}

/** A count with thousands separators, e.g. `1,000`. */
export function formatCount(n) {
  return n.toLocaleString("en-US");
}

/** A metric value short enough for an axis or tooltip. */
export function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100 || Number.isInteger(v)) return String(+v.toFixed(0));
  return String(+v.toPrecision(3));
}

/** Round a maximum up to a number that makes readable axis ticks. */
export function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
