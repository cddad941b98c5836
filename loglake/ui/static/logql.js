// LogQL text as the page needs it: tokens, the stream selector, filter terms and edits that add filters.

export const FUNCTIONS = [
  "count_over_time", "rate", "bytes_over_time", "bytes_rate", "avg_over_time", "sum_over_time", "min_over_time",
  "max_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time", "first_over_time",
  "last_over_time", "absent_over_time", "rate_counter", "sum", "avg", "min", "max", "count", "stddev", "stdvar",
  "topk", "bottomk", "sort", "sort_desc", "label_replace", "vector", "sqrt", "ceil", "floor", "round",
];
export const PARSERS = ["json", "logfmt", "regexp", "pattern", "unpack"];
export const STAGES = ["line_format", "label_format", "drop", "keep", "decolorize", "unwrap"];
export const KEYWORDS = ["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"];
const WORDS = new Set([...FUNCTIONS, ...PARSERS, ...STAGES, ...KEYWORDS, "ip", "duration", "bytes", "duration_seconds"]);

const OPERATORS = ["|=", "!=", "|~", "!~", "|>", "!>", "=~", "==", ">=", "<=", "=", ">", "<", "|", "+", "-", "*", "/", "%", "^"];

/**
 * Split LogQL into tokens {type, text, start, end}; type is one of
 * string, number, duration, word, label, op, punct, comment, space, other. Never throws.
 */
export function tokenize(text) {
  const out = [];
  let i = 0;
  let depth = 0; // inside {...}: words are label names
  const push = (type, start, end) => out.push({ type, text: text.slice(start, end), start, end });
  while (i < text.length) {
    const c = text[i];
    const start = i;
    if (/\s/.test(c)) {
      while (i < text.length && /\s/.test(text[i])) i++;
      push("space", start, i);
    } else if (c === "#") {
      while (i < text.length && text[i] !== "\n") i++;
      push("comment", start, i);
    } else if (c === '"' || c === "`") {
      i++;
      while (i < text.length && text[i] !== c) i += c === '"' && text[i] === "\\" ? 2 : 1;
      i = Math.min(i + 1, text.length);
      push("string", start, i);
    } else if (c === "[") {
      const m = /^\[[^\]]*\]?/.exec(text.slice(i));
      i += m[0].length;
      push("duration", start, i);
    } else if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(text[i + 1] || ""))) {
      const m = /^[0-9.]+(e[+-]?[0-9]+)?([a-zA-Z]+[0-9.]*)*/.exec(text.slice(i));
      i += m[0].length;
      push("number", start, i);
    } else if (/[A-Za-z_]/.test(c)) {
      while (i < text.length && /[A-Za-z0-9_.]/.test(text[i])) i++;
      const word = text.slice(start, i);
      push(depth > 0 ? "label" : WORDS.has(word) ? "word" : "label", start, i);
    } else {
      const op = OPERATORS.find((o) => text.startsWith(o, i));
      if (op) {
        i += op.length;
        push("op", start, i);
      } else {
        i++;
        if (c === "{") depth++;
        if (c === "}") depth = Math.max(0, depth - 1);
        push("{}(),".includes(c) ? "punct" : "other", start, i);
      }
    }
  }
  return out;
}

/** The value of a LogQL string token (double-quoted with Go escapes, or a backtick raw string). */
export function unquote(token) {
  if (token.startsWith("`")) return token.replace(/^`|`$/g, "");
  const body = token.replace(/^"|"$/g, "");
  return body.replace(/\\(.)/g, (_, ch) => ({ n: "\n", t: "\t", r: "\r" })[ch] ?? ch);
}

/** A LogQL double-quoted string holding `value`. */
export function quote(value) {
  return `"${String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\t/g, "\\t")}"`;
}

/** Whether a query is a log query (its first token opens a stream selector) rather than a metric query. */
export function isLogQuery(query) {
  const first = tokenize(query).find((t) => t.type !== "space" && t.type !== "comment");
  return !!first && first.text === "{";
}

/** {start, end} offsets of the first stream selector `{...}` in a query, or null. */
export function selectorSpan(query) {
  const toks = tokenize(query);
  const open = toks.find((t) => t.text === "{");
  if (!open) return null;
  const close = toks.find((t) => t.start > open.start && t.text === "}");
  return close ? { start: open.start, end: close.end } : null;
}

/** The first stream selector of a query as text, or null. */
export function streamSelector(query) {
  const span = selectorSpan(query);
  return span ? query.slice(span.start, span.end) : null;
}

/** A selector that matches exactly one label set. */
export function exactSelector(labels) {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${quote(labels[k])}`);
  return `{${parts.join(", ")}}`;
}

/** The query with a matcher `name op "value"` added to its stream selector. */
export function addSelectorMatcher(query, name, op, value) {
  const span = selectorSpan(query);
  const matcher = `${name}${op}${quote(value)}`;
  if (!span) return `{${matcher}}`;
  const inner = query.slice(span.start + 1, span.end - 1).trim();
  const sel = inner ? `{${inner}, ${matcher}}` : `{${matcher}}`;
  return query.slice(0, span.start) + sel + query.slice(span.end);
}

/** Whether the query already has a parser stage (json, logfmt, ...). */
export function hasParser(query) {
  return tokenize(query).some((t, i, all) => t.type === "word" && PARSERS.includes(t.text) && prevSignificant(all, i)?.text === "|");
}

function prevSignificant(toks, i) {
  for (let j = i - 1; j >= 0; j--) if (toks[j].type !== "space") return toks[j];
  return null;
}

/** The query with a pipeline stage appended, e.g. `| level="error"`. */
export function appendStage(query, stage) {
  return `${query.trimEnd()} | ${stage}`;
}

/** Terms a log query's positive line filters look for: [{kind: "text"|"regex", value}]. */
export function filterTerms(query) {
  const toks = tokenize(query).filter((t) => t.type !== "space" && t.type !== "comment");
  const terms = [];
  let kind = null;
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (t.text === "|=" || t.text === "|~") kind = t.text === "|=" ? "text" : "regex";
    else if (t.type === "string" && kind && ["|=", "|~", "or"].includes(toks[i - 1]?.text)) {
      terms.push({ kind, value: unquote(t.text) });
    } else if (!(t.type === "word" && t.text === "or")) kind = null;
  }
  return terms.filter((t) => t.value !== "");
}

/** A JavaScript RegExp matching every filter term in a line (global), or null when there are none. */
export function termsRegExp(terms) {
  const parts = [];
  let flags = "g";
  for (const t of terms) {
    if (t.kind === "text") parts.push(t.value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    else {
      let src = t.value;
      if (src.startsWith("(?i)")) {
        src = src.slice(4);
        flags = "gi";
      }
      try {
        new RegExp(src);
        parts.push(src);
      } catch {
        // An RE2 construct JavaScript lacks: no highlight for this term rather than a wrong one.
      }
    }
  }
  if (!parts.length) return null;
  try {
    return new RegExp(parts.map((p) => `(?:${p})`).join("|"), flags);
  } catch {
    return null;
  }
}
