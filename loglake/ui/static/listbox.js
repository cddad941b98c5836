// A popup listbox (suggestions, history): options with one active at a time, moved by the keyboard.

let nextId = 0;

/** A listbox controller over an element with role=listbox. */
export class Listbox {
  constructor(el, onAccept) {
    this.el = el;
    this.onAccept = onAccept;
    this.items = [];
    this.active = -1;
    this.prefix = `opt${++nextId}-`;
    el.addEventListener("mousedown", (e) => e.preventDefault()); // keep focus where it is (the editor)
    el.addEventListener("click", (e) => {
      const opt = e.target.closest('[role="option"]');
      if (opt) this.onAccept(this.items[Number(opt.dataset.index)]);
    });
  }

  get open() {
    return !this.el.hidden;
  }

  /** Show `items` ({label, detail?}); `activeFirst` makes the first one active. */
  show(items, activeFirst = true) {
    this.items = items;
    this.el.replaceChildren(
      ...items.map((item, i) => {
        const li = document.createElement("li");
        li.setAttribute("role", "option");
        li.id = this.prefix + i;
        li.dataset.index = String(i);
        li.textContent = item.label;
        if (item.detail) {
          const small = document.createElement("span");
          small.className = "option-detail";
          small.textContent = item.detail;
          li.append(small);
        }
        return li;
      }),
    );
    this.el.hidden = items.length === 0;
    this.setActive(activeFirst && items.length ? 0 : -1);
  }

  hide() {
    this.el.hidden = true;
    this.items = [];
    this.active = -1;
  }

  /** Move the active option by `delta` (wrapping). */
  move(delta) {
    if (!this.items.length) return;
    const n = this.items.length;
    this.setActive(this.active < 0 ? (delta > 0 ? 0 : n - 1) : (this.active + delta + n) % n);
  }

  setActive(i) {
    this.active = i;
    for (const li of this.el.children) li.setAttribute("aria-selected", String(Number(li.dataset.index) === i));
    const cur = this.el.children[i];
    if (cur) cur.scrollIntoView({ block: "nearest" });
  }

  get activeId() {
    return this.active >= 0 ? this.prefix + this.active : "";
  }

  get activeItem() {
    return this.items[this.active];
  }
}
