// Fields of an entry for the details view: stream labels, structured metadata and fields parsed from the line.

/** Fields parsed from a JSON object line (flattened with `_`, as LogQL's json parser names them), or null. */
export function parseJson(line) {
  const text = line.trim();
  if (!text.startsWith("{")) return null;
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    return null;
  }
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return null;
  const out = {};
  const walk = (value, prefix) => {
    for (const [k, v] of Object.entries(value)) {
      const name = (prefix ? `${prefix}_${k}` : k).replace(/[^A-Za-z0-9_]/g, "_");
      if (v && typeof v === "object" && !Array.isArray(v)) walk(v, name);
      else out[name] = v === null ? "" : typeof v === "string" ? v : JSON.stringify(v);
    }
  };
  walk(obj, "");
  return out;
}

const LOGFMT_PAIR = /([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s]*)/g;

/** Fields of a logfmt line (`key=value key2="quoted value"`), or null when it has fewer than one pair. */
export function parseLogfmt(line) {
  const out = {};
  let count = 0;
  for (const m of line.matchAll(LOGFMT_PAIR)) {
    const value = m[2].startsWith('"') ? m[2].slice(1, -1).replace(/\\(.)/g, "$1") : m[2];
    out[m[1].replace(/[^A-Za-z0-9_]/g, "_")] = value;
    count++;
  }
  return count ? out : null;
}

/** {format: "json"|"logfmt"|null, fields} for a line, detected automatically. */
export function parseLine(line) {
  const json = parseJson(line);
  if (json) return { format: "json", fields: json };
  const logfmt = parseLogfmt(line);
  if (logfmt) return { format: "logfmt", fields: logfmt };
  return { format: null, fields: {} };
}

/**
 * Split an entry's labels into stream labels, structured metadata and parsed fields.
 * `categories` ({stream, metadata, parsed}) comes from the server (categorize-labels) when it could say; else
 * `streamLabels` is the stream's indexed label set (from /series) or null when unknown.
 */
export function groupFields(labels, line, streamLabels, categories) {
  const parsed = parseLine(line);
  if (categories) {
    const fields = { ...parsed.fields };
    for (const [k, v] of Object.entries(categories.parsed)) {
      if (k !== "__error__" && k !== "__error_details__") fields[k] = v;
    }
    return { stream: { ...categories.stream }, metadata: { ...categories.metadata }, fields, format: parsed.format };
  }
  const stream = {};
  const metadata = {};
  const fields = { ...parsed.fields };
  for (const [k, v] of Object.entries(labels)) {
    if (streamLabels ? k in streamLabels : true) stream[k] = v;
    else if (k in parsed.fields) fields[k] = v;
    else if (k !== "__error__" && k !== "__error_details__") metadata[k] = v;
  }
  return { stream, metadata, fields, format: parsed.format };
}

/** The indexed label set among `candidates` that an entry's labels belong to (the largest subset). */
export function matchStream(labels, candidates) {
  let best = null;
  let bestSize = -1;
  for (const c of candidates) {
    const keys = Object.keys(c);
    if (keys.length > bestSize && keys.every((k) => labels[k] === c[k])) {
      best = c;
      bestSize = keys.length;
    }
  }
  return best;
}

export const TRACE_FIELDS = new Set(["trace_id", "traceID", "traceId", "request_id", "requestID", "requestId"]);
