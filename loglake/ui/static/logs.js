// The log lines: a virtualised list (only the rows in view are in the DOM) that expands a row in place.
import { escapeHtml, formatNs } from "./format.js";

export const ROW_HEIGHT = 22;
const OVERSCAN = 12;
const MAX_ROW_CHARS = 2000;

/** Line text as HTML with every match of `re` in a <mark>. */
export function markTerms(line, re) {
  if (!re) return escapeHtml(line);
  let html = "";
  let last = 0;
  re.lastIndex = 0;
  for (const m of line.matchAll(re)) {
    if (!m[0]) continue;
    html += escapeHtml(line.slice(last, m.index)) + `<mark>${escapeHtml(m[0])}</mark>`;
    last = m.index + m[0].length;
  }
  return html + escapeHtml(line.slice(last));
}

function entryKey(entry) {
  return `${entry.ts}\u0000${entry.line}`;
}

/**
 * A virtualised list of entries {seq, ts, line, labels, level}; seq numbers are consecutive in display order.
 * `renderDetails(entry)` builds the expanded part of a row.
 */
export class LogList {
  constructor(scroller, list, { renderDetails }) {
    this.scroller = scroller;
    this.list = list;
    this.renderDetails = renderDetails;
    this.entries = [];
    this.rows = new Map(); // seq -> element in the DOM
    this.expanded = new Map(); // seq -> extra height in px beyond ROW_HEIGHT
    this.termsRe = null;
    this.current = -1; // seq of the row whose button is in the Tab order
    this.pending = false;
    this.resizer = new ResizeObserver((items) => this.onResize(items));
    scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    list.addEventListener("click", (e) => {
      const btn = e.target.closest("button.expand");
      if (btn) this.toggle(Number(btn.closest('[role="listitem"]').dataset.seq));
    });
    list.addEventListener("keydown", (e) => this.onKey(e));
    list.addEventListener("focusin", (e) => {
      const row = e.target.closest('[role="listitem"]');
      if (row && e.target.matches("button.expand")) {
        this.current = Number(row.dataset.seq);
        this.updateTabStop(this.current);
      }
    });
    new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  get length() {
    return this.entries.length;
  }

  /** Replace all entries (a new query result); `termsRe` marks filter terms. Lines expanded before stay so. */
  setEntries(entries, termsRe) {
    const keep = new Set();
    for (const seq of this.expanded.keys()) {
      const e = this.entries[this.indexOf(seq)];
      if (e) keep.add(entryKey(e));
    }
    this.entries = entries;
    this.termsRe = termsRe;
    this.clearRows();
    this.expanded.clear();
    if (keep.size) for (const e of entries) if (keep.has(entryKey(e))) this.expanded.set(e.seq, 0);
    this.scroller.scrollTop = 0;
    this.render();
  }

  /** Append entries (tail), keeping only the newest `cap`; follows the end if the view was at the end. */
  append(entries, cap) {
    if (!entries.length) return;
    const atEnd = this.isAtEnd();
    let next = this.entries.concat(entries);
    const removed = Math.max(0, next.length - cap);
    if (removed) {
      next = next.slice(removed);
      const firstSeq = next[0].seq;
      for (const seq of [...this.expanded.keys()]) if (seq < firstSeq) this.expanded.delete(seq);
      if (!atEnd) this.scroller.scrollTop = Math.max(0, this.scroller.scrollTop - removed * ROW_HEIGHT);
    }
    this.entries = next;
    this.render();
    if (atEnd) this.scrollToEnd();
  }

  isAtEnd() {
    const s = this.scroller;
    return s.scrollTop + s.clientHeight >= s.scrollHeight - ROW_HEIGHT * 2;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.render();
  }

  clearRows() {
    for (const el of this.rows.values()) {
      this.resizer.unobserve(el);
      el.remove();
    }
    this.rows.clear();
  }

  indexOf(seq) {
    return this.entries.length ? seq - this.entries[0].seq : -1;
  }

  /** Top offset in px of the row at index i. */
  rowTop(i) {
    let top = i * ROW_HEIGHT;
    for (const [seq, extra] of this.expanded) if (this.indexOf(seq) < i) top += extra;
    return top;
  }

  totalHeight() {
    return this.rowTop(this.entries.length);
  }

  /** Index of the row at offset y. */
  indexAt(y) {
    let lo = 0;
    let hi = this.entries.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.rowTop(mid) <= y) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  /** Put the rows in view (plus overscan) into the DOM and drop the others. */
  render() {
    const n = this.entries.length;
    this.list.style.height = `${this.totalHeight()}px`;
    if (!n) return this.clearRows();
    const top = this.scroller.scrollTop;
    const first = Math.max(0, this.indexAt(top) - OVERSCAN);
    const last = Math.min(n - 1, this.indexAt(top + this.scroller.clientHeight) + OVERSCAN);
    const firstSeq = this.entries[first].seq;
    const lastSeq = this.entries[last].seq;
    for (const [seq, el] of this.rows) {
      if (seq < firstSeq || seq > lastSeq) {
        if (el.contains(document.activeElement)) continue; // keep the focused row so focus is not lost
        this.resizer.unobserve(el);
        el.remove();
        this.rows.delete(seq);
      }
    }
    for (let i = first; i <= last; i++) {
      const entry = this.entries[i];
      let el = this.rows.get(entry.seq);
      if (!el) {
        el = this.buildRow(entry);
        this.rows.set(entry.seq, el);
        this.list.append(el);
      }
      el.style.transform = `translateY(${this.rowTop(i)}px)`;
      el.setAttribute("aria-posinset", String(i + 1));
      el.setAttribute("aria-setsize", String(n));
    }
    this.updateTabStop(firstSeq);
  }

  /** One row button is in the Tab order (the last focused, else the first in view); arrows move between rows. */
  updateTabStop(fallbackSeq) {
    const stop = this.rows.has(this.current) ? this.current : fallbackSeq;
    for (const [seq, el] of this.rows) el.querySelector("button.expand").tabIndex = seq === stop ? 0 : -1;
  }

  buildRow(entry) {
    const el = document.createElement("div");
    el.setAttribute("role", "listitem");
    el.className = `log-row lvl-${entry.level}`;
    el.dataset.ts = entry.ts;
    el.dataset.seq = String(entry.seq);
    const open = this.expanded.has(entry.seq);
    const text = entry.line.length > MAX_ROW_CHARS ? entry.line.slice(0, MAX_ROW_CHARS) : entry.line;
    el.innerHTML =
      `<div class="log-head"><button type="button" class="expand" aria-expanded="${open}">` +
      `<span class="caret" aria-hidden="true">${open ? "▾" : "▸"}</span>` +
      `<span class="visually-hidden">Details of line at </span><time>${formatNs(entry.ts)}</time></button>` +
      `<span class="lvl">${entry.level === "unknown" ? "" : entry.level}</span>` +
      `<span class="line">${markTerms(text, this.termsRe)}</span></div>`;
    if (open) {
      el.append(this.renderDetails(entry));
      this.resizer.observe(el);
    }
    return el;
  }

  /** Expand or collapse the row of `seq`. */
  toggle(seq) {
    const entry = this.entries[this.indexOf(seq)];
    if (!entry) return;
    if (this.expanded.has(seq)) this.expanded.delete(seq);
    else this.expanded.set(seq, 0);
    const old = this.rows.get(seq);
    const hadFocus = old && old.contains(document.activeElement);
    if (old) {
      this.resizer.unobserve(old);
      old.remove();
      this.rows.delete(seq);
    }
    this.render();
    const el = this.rows.get(seq);
    if (el && this.expanded.has(seq)) this.expanded.set(seq, Math.max(0, el.offsetHeight - ROW_HEIGHT));
    this.render();
    if (hadFocus && el) el.querySelector("button.expand").focus();
  }

  onResize(items) {
    let changed = false;
    for (const item of items) {
      const seq = Number(item.target.dataset.seq);
      if (!this.expanded.has(seq)) continue;
      const extra = Math.max(0, item.target.offsetHeight - ROW_HEIGHT);
      if (extra !== this.expanded.get(seq)) {
        this.expanded.set(seq, extra);
        changed = true;
      }
    }
    if (changed) this.schedule();
  }

  onKey(e) {
    if (!e.target.matches("button.expand") || !["ArrowDown", "ArrowUp", "Home", "End"].includes(e.key)) return;
    e.preventDefault();
    const i = this.indexOf(Number(e.target.closest('[role="listitem"]').dataset.seq));
    const n = this.entries.length;
    const target = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: n - 1 }[e.key];
    this.focusIndex(Math.min(n - 1, Math.max(0, target)));
  }

  /** Scroll the row at index i into view and focus its expand button. */
  focusIndex(i) {
    const top = this.rowTop(i);
    const s = this.scroller;
    if (top < s.scrollTop) s.scrollTop = top;
    else if (top + ROW_HEIGHT > s.scrollTop + s.clientHeight) s.scrollTop = top + ROW_HEIGHT - s.clientHeight;
    this.render();
    const el = this.rows.get(this.entries[i].seq);
    if (el) el.querySelector("button.expand").focus();
  }
}
