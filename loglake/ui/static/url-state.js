// The whole view state in the page URL, so a view can be shared.

export const DEFAULTS = { query: "", from: "now-1h", to: "now", direction: "backward", limit: 1000, mode: "logs" };

/** The view state a URL's query string describes (defaults for what it leaves out). */
export function readState(search = location.search) {
  const p = new URLSearchParams(search);
  const limit = parseInt(p.get("limit") || "", 10);
  return {
    query: p.get("query") ?? DEFAULTS.query,
    from: p.get("from") || DEFAULTS.from,
    to: p.get("to") || DEFAULTS.to,
    direction: p.get("direction") === "forward" ? "forward" : "backward",
    limit: Number.isFinite(limit) && limit > 0 ? limit : DEFAULTS.limit,
    mode: p.get("mode") === "tail" ? "tail" : "logs",
  };
}

/** The URL query string of a view state. */
export function stateSearch(state) {
  const p = new URLSearchParams();
  p.set("query", state.query);
  p.set("from", state.from);
  p.set("to", state.to);
  p.set("direction", state.direction);
  p.set("limit", String(state.limit));
  p.set("mode", state.mode);
  return `?${p}`;
}

/** Put a view state into the address bar; `push` adds a history entry, else the current one is replaced. */
export function writeState(state, push) {
  const search = stateSearch(state);
  if (search === location.search) return;
  const url = `${location.pathname}${search}`;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}
