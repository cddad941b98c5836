// Small helpers to build SVG elements.
const NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes (and text for `text` elements). */
export function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** `count` evenly spaced tick positions across [lo, hi]. */
export function ticks(lo, hi, count) {
  if (hi <= lo) return [lo];
  const out = [];
  for (let i = 0; i <= count; i++) out.push(lo + ((hi - lo) * i) / count);
  return out;
}
