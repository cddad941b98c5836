// Query history: the last 50 queries run, newest first, in localStorage.
const KEY = "loglake.history";
const MAX = 50;

/** The remembered queries, newest first. */
export function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(list) ? list.filter((q) => typeof q === "string") : [];
  } catch {
    return [];
  }
}

/** Remember a query run (moved to the front if already known). */
export function rememberQuery(query) {
  const q = query.trim();
  if (!q) return;
  const list = [q, ...loadHistory().filter((x) => x !== q)].slice(0, MAX);
  try {
    localStorage.setItem(KEY, JSON.stringify(list));
  } catch {
    // Storage full or off: history is a convenience, the query still runs.
  }
}
