// Time ranges: relative (`now-1h` .. `now`) or absolute (RFC 3339 or ns), resolved to ns for the API.
import { msToNs } from "./format.js";

export const RELATIVE = ["5m", "15m", "1h", "6h", "24h", "7d"];
const UNIT_MS = { s: 1000, m: 60000, h: 3600000, d: 86400000, w: 604800000 };

/** Milliseconds of a duration such as `15m` or `7d`, or null. */
export function durationMs(text) {
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(text);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : null;
}

/** A time expression (`now`, `now-1h`, RFC 3339, ns or ms digits) as ms since the epoch, or null. */
export function parseTime(expr, nowMs = Date.now()) {
  const text = String(expr).trim();
  if (text === "now") return nowMs;
  const rel = /^now-(.+)$/.exec(text);
  if (rel) {
    const d = durationMs(rel[1]);
    return d === null ? null : nowMs - d;
  }
  if (/^\d+$/.test(text)) {
    // Digits: ns (19 digits today), else seconds or ms by magnitude.
    if (text.length > 15) return Number(BigInt(text) / 1000000n);
    return text.length > 11 ? Number(text) : Number(text) * 1000;
  }
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

/** {startNs, endNs, startMs, endMs} of a state's range, relative times taken at one `now`. */
export function resolveRange(from, to, nowMs = Date.now()) {
  const startMs = parseTime(from, nowMs) ?? nowMs - 3600000;
  let endMs = parseTime(to, nowMs) ?? nowMs;
  if (endMs <= startMs) endMs = startMs + 1000;
  return { startMs, endMs, startNs: msToNs(startMs), endNs: msToNs(endMs) };
}

/** The select value for a range: one of RELATIVE when it is `now-X`..`now`, else `custom`. */
export function presetOf(from, to) {
  const m = /^now-(.+)$/.exec(from);
  return to === "now" && m && RELATIVE.includes(m[1]) ? m[1] : "custom";
}

/** A datetime-local input value (local time, seconds) for ms since the epoch. */
export function toLocalInput(ms) {
  const d = new Date(ms);
  const off = d.getTimezoneOffset() * 60000;
  return new Date(ms - off).toISOString().slice(0, 19);
}

/** ms since the epoch of a datetime-local input value, or null. */
export function fromLocalInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : ms;
}

/** An absolute time for the URL (RFC 3339). */
export function toUrlTime(ms) {
  return new Date(ms).toISOString();
}
