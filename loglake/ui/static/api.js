// The public HTTP API of loglake (Loki's), as the page uses it.

/** An answer other than 2xx; `message` is the server's text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function get(path, params, signal, headers = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
    else if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
  }
  const url = qs.toString() ? `${path}?${qs}` : path;
  const resp = await fetch(url, { signal, headers: { Accept: "application/json", ...headers } });
  if (!resp.ok) {
    const text = (await resp.text()).trim();
    throw new ApiError(resp.status, text || `${resp.status} ${resp.statusText}`);
  }
  return resp.json();
}

// Asks for Loki's categorize-labels encoding: streams hold only stream labels and each entry carries its
// structured metadata and parsed labels, so the details view need not guess which label is which.
const CATEGORIZE = { "X-Loki-Response-Encoding-Flags": "categorize-labels" };

/** Run a range query; returns Loki's `data` ({resultType, result}), log entries categorized. */
export async function queryRange({ query, start, end, limit, direction, step }, signal) {
  const body = await get("/loki/api/v1/query_range", { query, start, end, limit, direction, step }, signal, CATEGORIZE);
  return body.data;
}

/** Label names seen in [start, end). */
export async function labelNames(start, end, signal) {
  const body = await get("/loki/api/v1/labels", { start, end }, signal);
  return body.data || [];
}

/** Values of one label in [start, end), optionally only of streams matching `query`. */
export async function labelValues(name, start, end, query, signal) {
  const body = await get(`/loki/api/v1/label/${encodeURIComponent(name)}/values`, { start, end, query }, signal);
  return body.data || [];
}

/** Label sets of the streams matching a selector in [start, end). */
export async function series(selector, start, end, signal) {
  const body = await get("/loki/api/v1/series", { "match[]": [selector], start, end }, signal);
  return body.data || [];
}

/** URL of the live tail websocket for a query. */
export function tailUrl({ query, limit, start, delayFor }) {
  const qs = new URLSearchParams({ query, limit: String(limit), start: String(start) });
  if (delayFor) qs.set("delay_for", String(delayFor));
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/loki/api/v1/tail?${qs}`;
}
