// The expanded part of a log row: the whole line, its fields with filter buttons, trace links and context.
import { formatNs } from "./format.js";
import { TRACE_FIELDS, groupFields } from "./fields.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/**
 * Build the details region of an entry. `ctx` supplies:
 * streamLabels(entry) -> label set or null, onFilter(group, name, value, exclude, format), traceHref(value),
 * onTrace(value), loadContext(entry, streamLabels) -> Promise<{before, after}> of {ts, line}.
 */
export function renderDetails(entry, ctx) {
  const streamLabels = entry.categories ? entry.categories.stream : ctx.streamLabels(entry);
  const groups = groupFields(entry.labels, entry.line, streamLabels, entry.categories);
  const region = el("div", { role: "region", "aria-label": "Line details", class: "details" });
  region.append(el("pre", { class: "full-line", text: entry.line }));

  const contextBox = el("div", { class: "context", hidden: "" });
  const contextBtn = el("button", { type: "button", text: "Show context" });
  contextBtn.addEventListener("click", () => toggleContext(entry, streamLabels || groups.stream, ctx, contextBtn, contextBox));
  const format = groups.format ? `Parsed as ${groups.format}` : "No fields parsed from the line";
  region.append(el("div", { class: "details-actions" }, contextBtn, el("span", { class: "muted", text: format })), contextBox);

  const table = el("table", { class: "fields" });
  addGroup(table, "Stream labels", "stream", groups.stream, ctx, groups.format);
  addGroup(table, "Structured metadata", "metadata", groups.metadata, ctx, groups.format);
  addGroup(table, "Parsed fields", "fields", groups.fields, ctx, groups.format);
  region.append(table);
  return region;
}

function addGroup(table, title, group, fields, ctx, format) {
  const names = Object.keys(fields).sort();
  const body = el("tbody");
  const heading = el("th", { colspan: "3", scope: "colgroup", class: "group" }, el("span", { text: title }));
  heading.append(" ", el("span", { class: "count", text: `(${names.length})` }));
  body.append(el("tr", {}, heading));
  for (const name of names) {
    const value = fields[name];
    const valueCell = el("td", { class: "value" });
    if (TRACE_FIELDS.has(name) && value) {
      const link = el("a", {
        class: "trace-link",
        href: ctx.traceHref(value),
        "aria-label": `Show all lines with ${name} ${value}`,
        text: value,
      });
      link.addEventListener("click", (e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; // let the browser open a new tab
        e.preventDefault();
        ctx.onTrace(value);
      });
      valueCell.append(link);
    } else valueCell.textContent = value;
    const filterFor = el("button", { type: "button", class: "icon", "aria-label": `Filter for ${name}=${value}`, text: "+" });
    filterFor.addEventListener("click", () => ctx.onFilter(group, name, value, false, format));
    const filterOut = el("button", { type: "button", class: "icon", "aria-label": `Filter out ${name}=${value}`, text: "−" });
    filterOut.addEventListener("click", () => ctx.onFilter(group, name, value, true, format));
    body.append(el("tr", {}, el("th", { scope: "row", text: name }), valueCell, el("td", { class: "actions" }, filterFor, filterOut)));
  }
  table.append(body);
}

async function toggleContext(entry, streamLabels, ctx, button, box) {
  if (!box.hidden) {
    box.hidden = true;
    button.textContent = "Show context";
    return;
  }
  box.hidden = false;
  button.textContent = "Hide context";
  box.replaceChildren(el("p", { class: "muted", text: "Loading context…" }));
  try {
    const { before, after } = await ctx.loadContext(entry, streamLabels);
    const list = el("ol", { class: "context-lines", "aria-label": "Context" });
    const item = (e, current) =>
      el(
        "li",
        current ? { class: "current", "aria-current": "true" } : {},
        el("time", { text: formatNs(e.ts) }),
        el("span", { text: ` ${e.line}` }),
      );
    list.append(...before.map((e) => item(e, false)), item(entry, true), ...after.map((e) => item(e, false)));
    box.replaceChildren(el("p", { class: "muted", text: `${before.length} lines before, ${after.length} after, same stream` }), list);
  } catch (err) {
    box.replaceChildren(el("p", { role: "alert", class: "error", text: `Context failed: ${err.message}` }));
  }
}
