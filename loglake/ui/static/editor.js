// The LogQL editor: a textarea over a highlighted copy, with autocompletion and Ctrl+Enter to run.
import { candidates, completionContext } from "./completion.js";
import { Listbox } from "./listbox.js";
import { highlight } from "./logql-highlight.js";

/** The query editor; `sources` gives label names and values for suggestions, `onRun` runs the query. */
export class QueryEditor {
  constructor({ textarea, overlay, suggestions, onRun, sources }) {
    this.textarea = textarea;
    this.overlay = overlay;
    this.onRun = onRun;
    this.sources = sources;
    this.request = 0;
    this.list = new Listbox(suggestions, (item) => this.accept(item));
    textarea.setAttribute("aria-autocomplete", "list");
    textarea.setAttribute("aria-controls", suggestions.id);
    textarea.addEventListener("input", () => {
      this.refresh();
      this.suggest();
    });
    textarea.addEventListener("scroll", () => {
      overlay.scrollTop = textarea.scrollTop;
      overlay.scrollLeft = textarea.scrollLeft;
    });
    textarea.addEventListener("keydown", (e) => this.onKey(e));
    textarea.addEventListener("blur", () => this.close());
    this.refresh();
  }

  get value() {
    return this.textarea.value;
  }

  set value(text) {
    this.textarea.value = text;
    this.refresh();
  }

  focus() {
    this.textarea.focus();
  }

  /** Redraw the highlight and fit the height to the text. */
  refresh() {
    this.overlay.innerHTML = highlight(this.textarea.value);
    const lines = this.textarea.value.split("\n").length;
    this.textarea.rows = Math.min(Math.max(lines, 2), 12);
  }

  onKey(e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      this.close();
      this.onRun();
      return;
    }
    if (e.key === " " && e.ctrlKey) {
      e.preventDefault();
      this.suggest(true);
      return;
    }
    if (!this.list.open) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      this.list.move(e.key === "ArrowDown" ? 1 : -1);
      this.textarea.setAttribute("aria-activedescendant", this.list.activeId);
    } else if ((e.key === "Enter" || e.key === "Tab") && this.list.activeItem) {
      e.preventDefault();
      this.accept(this.list.activeItem);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      this.close();
    }
  }

  close() {
    this.list.hide();
    this.textarea.removeAttribute("aria-activedescendant");
  }

  /** Look up suggestions for the cursor position and show them (`forced`: also with an empty prefix). */
  async suggest(forced = false) {
    const pos = this.textarea.selectionStart;
    if (pos !== this.textarea.selectionEnd) return this.close();
    const ctx = completionContext(this.textarea.value, pos);
    if (!ctx || (ctx.kind === "word" && !ctx.prefix && !forced)) return this.close();
    const ticket = ++this.request;
    let labels = [];
    let values = [];
    try {
      if (ctx.kind === "label") labels = await this.sources.labelNames();
      if (ctx.kind === "value") values = await this.sources.labelValues(ctx.label);
    } catch {
      // Suggestions are best effort: a failed lookup shows none.
    }
    if (ticket !== this.request || document.activeElement !== this.textarea) return;
    this.ctx = ctx;
    this.list.show(candidates(ctx, labels, values).slice(0, 100));
    if (this.list.open) this.textarea.setAttribute("aria-activedescendant", this.list.activeId);
    else this.close();
  }

  accept(item) {
    const ta = this.textarea;
    const pos = ta.selectionStart;
    const text = ta.value;
    // Skip a closing quote that is already there so accepting a value does not double it.
    let end = pos;
    if (item.insert.endsWith('"') && text[end] === '"') end++;
    ta.value = text.slice(0, this.ctx.from) + item.insert + text.slice(end);
    const cursor = this.ctx.from + item.insert.length;
    ta.setSelectionRange(cursor, cursor);
    this.refresh();
    this.close();
    if (item.reopen) this.suggest();
  }
}
