// The label browser: pick label values to build a stream selector.
import { quote } from "./logql.js";

/** Build a selector from chosen values: one value is `=`, several are `=~` alternatives. */
export function buildSelector(chosen) {
  const parts = [];
  for (const [name, values] of [...chosen.entries()].sort()) {
    const list = [...values].sort();
    if (!list.length) continue;
    if (list.length === 1) parts.push(`${name}=${quote(list[0])}`);
    else parts.push(`${name}=~${quote(list.map((v) => v.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"))}`);
  }
  return `{${parts.join(", ")}}`;
}

/** The label browser dialog; `sources` gives names and values, `onUse(selector)` takes the result. */
export class LabelBrowser {
  constructor(dialog, { sources, onUse }) {
    this.dialog = dialog;
    this.sources = sources;
    this.onUse = onUse;
    this.chosen = new Map();
    this.names = dialog.querySelector(".label-names");
    this.values = dialog.querySelector(".label-values");
    this.preview = dialog.querySelector(".selector-preview");
    dialog.querySelector(".use-selector").addEventListener("click", () => {
      this.onUse(buildSelector(this.chosen));
      dialog.close();
    });
    dialog.querySelector(".close-dialog").addEventListener("click", () => dialog.close());
    this.names.addEventListener("click", (e) => {
      const btn = e.target.closest("button");
      if (btn) this.showValues(btn.dataset.name);
    });
    this.values.addEventListener("change", (e) => {
      const box = e.target;
      if (box.type !== "checkbox") return;
      const set = this.chosen.get(box.dataset.name) || new Set();
      if (box.checked) set.add(box.value);
      else set.delete(box.value);
      this.chosen.set(box.dataset.name, set);
      this.updatePreview();
    });
  }

  async open() {
    this.chosen.clear();
    this.values.replaceChildren();
    this.updatePreview();
    this.names.replaceChildren(text("p", "Loading label names…"));
    this.dialog.showModal();
    try {
      const names = (await this.sources.labelNames()).filter((n) => !n.startsWith("__"));
      this.names.replaceChildren(
        ...names.map((n) => {
          const b = document.createElement("button");
          b.type = "button";
          b.dataset.name = n;
          b.textContent = n;
          b.setAttribute("aria-pressed", "false");
          return b;
        }),
      );
      if (!names.length) this.names.replaceChildren(text("p", "No labels in this time range."));
      const first = this.names.querySelector("button");
      if (first) first.focus();
    } catch (err) {
      this.names.replaceChildren(text("p", `Could not load labels: ${err.message}`));
    }
  }

  async showValues(name) {
    for (const b of this.names.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.name === name));
    const fieldset = document.createElement("fieldset");
    const legend = text("legend", `Values of ${name}`);
    fieldset.append(legend, text("p", "Loading…"));
    this.values.replaceChildren(fieldset);
    try {
      const values = await this.sources.labelValues(name);
      const chosen = this.chosen.get(name) || new Set();
      fieldset.replaceChildren(
        legend,
        ...values.map((v) => {
          const label = document.createElement("label");
          const box = document.createElement("input");
          box.type = "checkbox";
          box.value = v;
          box.dataset.name = name;
          box.checked = chosen.has(v);
          label.append(box, ` ${v}`);
          return label;
        }),
      );
    } catch (err) {
      fieldset.replaceChildren(legend, text("p", `Could not load values: ${err.message}`));
    }
  }

  updatePreview() {
    this.preview.textContent = buildSelector(this.chosen);
  }
}

function text(tag, content) {
  const node = document.createElement(tag);
  node.textContent = content;
  return node;
}
