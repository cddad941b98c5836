// LogQL syntax highlighting as HTML spans (the editor's overlay).
import { escapeHtml } from "./format.js";
import { FUNCTIONS, PARSERS, tokenize } from "./logql.js";

const FN = new Set(FUNCTIONS);
const PARSER = new Set(PARSERS);

function classOf(tok) {
  switch (tok.type) {
    case "string":
      return "tok-string";
    case "number":
    case "duration":
      return "tok-number";
    case "comment":
      return "tok-comment";
    case "op":
      return "tok-op";
    case "label":
      return "tok-label";
    case "word":
      return FN.has(tok.text) ? "tok-fn" : PARSER.has(tok.text) ? "tok-parser" : "tok-keyword";
    case "punct":
      return "tok-punct";
    default:
      return "";
  }
}

/** HTML of a query with each token in a span whose class names its kind. */
export function highlight(query) {
  let html = "";
  for (const tok of tokenize(query)) {
    const cls = classOf(tok);
    html += cls ? `<span class="${cls}">${escapeHtml(tok.text)}</span>` : escapeHtml(tok.text);
  }
  // A trailing newline needs content after it, or the overlay is one line shorter than the textarea.
  return `${html}\n`;
}
