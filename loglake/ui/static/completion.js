// What to suggest at the cursor of a LogQL query: label names, label values or functions and keywords.
import { FUNCTIONS, KEYWORDS, PARSERS, STAGES, tokenize } from "./logql.js";

const PIPE_WORDS = [...PARSERS, ...STAGES];
const TOP_WORDS = [...FUNCTIONS.map((f) => `${f}(`), ...KEYWORDS];

/**
 * The completion context at `pos`: {kind: "label"|"value"|"word", prefix, from, label?}
 * (`from` is where the replaced text starts), or null when nothing fits.
 */
export function completionContext(text, pos) {
  const before = text.slice(0, pos);
  const toks = tokenize(before);
  let depth = 0;
  for (const t of toks) {
    if (t.text === "{") depth++;
    else if (t.text === "}") depth = Math.max(0, depth - 1);
  }
  const last = toks[toks.length - 1];
  if (depth > 0) {
    const value = /([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*"([^"\\]*)$/.exec(before);
    if (value && last && isOpenString(last.text)) {
      return { kind: "value", label: value[1], prefix: value[3], from: pos - value[3].length, regex: value[2].includes("~") };
    }
    const name = /(?:^|[{,]\s*)([A-Za-z_][A-Za-z0-9_]*)?$/.exec(before.slice(before.lastIndexOf("{")));
    if (name && /[{,]\s*[A-Za-z0-9_]*$/.test(before)) {
      const prefix = name[1] || "";
      return { kind: "label", prefix, from: pos - prefix.length };
    }
    return null;
  }
  if (last && (last.type === "string" || last.type === "comment")) return null;
  const word = /([A-Za-z_][A-Za-z0-9_]*)$/.exec(before);
  const prefix = word ? word[1] : "";
  const significant = toks.filter((t) => t.type !== "space");
  const prev = significant[significant.length - (word ? 2 : 1)];
  if (prev && prev.text === "|") return { kind: "pipe", prefix, from: pos - prefix.length };
  if (!prefix) return null;
  return { kind: "word", prefix, from: pos - prefix.length };
}

function isOpenString(text) {
  if (!text.startsWith('"')) return false;
  const body = text.slice(1);
  return !/(^|[^\\])(\\\\)*"$/.test(body);
}

/** Candidates {label, insert} for a context; `labels` and `values` are the known names and values. */
export function candidates(ctx, labels, values) {
  const p = ctx.prefix.toLowerCase();
  const starts = (s) => s.toLowerCase().startsWith(p) && s !== ctx.prefix;
  if (ctx.kind === "label") return labels.filter(starts).map((n) => ({ label: n, insert: `${n}="` , reopen: true }));
  if (ctx.kind === "value") {
    return values
      .filter((v) => v.toLowerCase().startsWith(p))
      .map((v) => ({ label: v, insert: `${escapeValue(v, ctx.regex)}"` }));
  }
  const words = ctx.kind === "pipe" ? PIPE_WORDS : TOP_WORDS;
  return words.filter(starts).map((w) => ({ label: w.replace(/\($/, ""), insert: w }));
}

function escapeValue(v, regex) {
  const re = regex ? v.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") : v;
  return re.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
}
