// The Explore page: wires the editor, time controls, histogram, log list, metric chart, tail and URL state.
import * as api from "./api.js";
import { MetricChart, fromMatrix } from "./chart.js";
import { renderDetails } from "./details.js";
import { QueryEditor } from "./editor.js";
import { matchStream } from "./fields.js";
import { addNs, compareNs, formatCount } from "./format.js";
import { Histogram, histogramStep } from "./histogram.js";
import { loadHistory, rememberQuery } from "./history.js";
import { LabelBrowser } from "./labels.js";
import { LEVEL_REGEXP_STAGE, detectLevel, normalizeLevel } from "./levels.js";
import { Listbox } from "./listbox.js";
import { LogList } from "./logs.js";
import {
  addSelectorMatcher, appendStage, exactSelector, filterTerms, hasParser, isLogQuery, quote, streamSelector, termsRegExp,
} from "./logql.js";
import { TailSession } from "./tail.js";
import { setupTheme } from "./theme.js";
import { fromLocalInput, presetOf, resolveRange, toLocalInput, toUrlTime } from "./timerange.js";
import { readState, stateSearch, writeState } from "./url-state.js";

const TAIL_CAP = 5000;
const CONTEXT_LINES = 10;
const $ = (id) => document.getElementById(id);

let state = readState();
let controller = null; // aborts the queries of the previous run
let tail = null;
let seriesSets = []; // label sets of the streams the current query selects (to tell stream labels apart)
let lookupCache = { names: null, values: new Map() };
let tailSeq = 0;
let dropped = 0; // entries the server reported it could not send to this tail

const sources = {
  labelNames() {
    if (!lookupCache.names) {
      const r = resolveRange(state.from, state.to);
      lookupCache.names = api.labelNames(r.startNs, r.endNs);
      lookupCache.names.catch(() => (lookupCache.names = null));
    }
    return lookupCache.names;
  },
  labelValues(name) {
    if (!lookupCache.values.has(name)) {
      const r = resolveRange(state.from, state.to);
      const p = api.labelValues(name, r.startNs, r.endNs);
      lookupCache.values.set(name, p);
      p.catch(() => lookupCache.values.delete(name));
    }
    return lookupCache.values.get(name);
  },
};

const editor = new QueryEditor({
  textarea: $("query"),
  overlay: document.querySelector(".editor .highlight"),
  suggestions: $("suggestions"),
  onRun: () => run(true),
  sources,
});

const logList = new LogList($("log-scroll"), $("log-list"), {
  renderDetails: (entry) =>
    renderDetails(entry, {
      streamLabels: (e) => matchStream(e.labels, seriesSets),
      onFilter: addFilter,
      traceHref: (value) => stateSearch({ ...state, query: traceQuery(value), mode: "logs" }),
      onTrace: (value) => {
        editor.value = traceQuery(value);
        state.mode = "logs";
        run(true);
      },
      loadContext,
    }),
});

const histogram = new Histogram($("histogram"), $("histogram-legend"), (fromMs, toMs) => {
  setRange(toUrlTime(fromMs), toUrlTime(toMs));
  run(true);
});

const chart = new MetricChart({ svg: $("chart"), legend: $("chart-legend"), tooltip: $("chart-tooltip"), table: $("metric-table") });

// ---- state <-> controls -------------------------------------------------------------------------------------

function applyStateToControls() {
  editor.value = state.query;
  $("direction").value = state.direction;
  $("limit").value = String(state.limit);
  showRange();
}

function showRange() {
  const preset = presetOf(state.from, state.to);
  $("range").value = preset;
  $("custom-range").hidden = preset !== "custom";
  if (preset === "custom") {
    const r = resolveRange(state.from, state.to);
    $("from").value = toLocalInput(r.startMs);
    $("to").value = toLocalInput(r.endMs);
  }
}

function setRange(from, to) {
  state.from = from;
  state.to = to;
  showRange();
}

function readControls() {
  state.query = editor.value;
  state.direction = $("direction").value;
  const limit = parseInt($("limit").value, 10);
  state.limit = Number.isFinite(limit) && limit > 0 ? limit : 1000;
}

// ---- running ------------------------------------------------------------------------------------------------

function showError(message) {
  const box = $("query-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setSummary(text) {
  $("result-summary").textContent = text;
}

/** Run the view the controls describe; `push` adds a browser history entry. */
function run(push) {
  readControls();
  writeState(state, push);
  lookupCache = { names: null, values: new Map() };
  if (state.mode === "tail") return startTail();
  stopTail();
  return runQuery();
}

async function runQuery() {
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  const query = state.query.trim();
  showError("");
  if (!query) {
    setSummary("Enter a LogQL query and press Run query (Ctrl+Enter).");
    return;
  }
  rememberQuery(query);
  const range = resolveRange(state.from, state.to);
  const isLog = isLogQuery(query);
  const spanS = (range.endMs - range.startMs) / 1000;
  const metricStep = Math.max(1, Math.ceil(spanS / 250));
  setSummary("Loading…");
  if (isLog) loadVolume(query, range, signal);
  else $("volume").hidden = true;
  // Stream label sets are needed to group the fields of an expanded line, so they arrive with the lines.
  const seriesLoaded = isLog ? loadSeries(query, range, signal) : Promise.resolve();
  try {
    const [data] = await Promise.all([
      api.queryRange(
        { query, start: range.startNs, end: range.endNs, limit: state.limit, direction: state.direction, step: isLog ? undefined : metricStep },
        signal,
      ),
      seriesLoaded,
    ]);
    if (data.resultType === "streams") showLogs(data.result, query);
    else showMetric(data, range, metricStep);
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(err.message);
    setSummary("Query failed");
  }
}

function entriesOf(result) {
  const entries = [];
  for (const s of result) {
    for (const [ts, line, cat] of s.values) {
      if (!cat) {
        entries.push({ ts, line, labels: s.stream });
        continue;
      }
      const metadata = cat.structuredMetadata || {};
      const parsed = cat.parsed || {};
      const labels = { ...s.stream, ...metadata, ...parsed };
      entries.push({ ts, line, labels, categories: { stream: s.stream, metadata, parsed } });
    }
  }
  return entries;
}

function withLevels(entries, firstSeq) {
  entries.forEach((e, i) => {
    e.seq = firstSeq + i;
    e.level = detectLevel(e.labels, e.line);
  });
  return entries;
}

function showLogs(result, query) {
  $("metric").hidden = true;
  chart.clear();
  $("logs").hidden = false;
  const entries = entriesOf(result);
  entries.sort((a, b) => (state.direction === "forward" ? compareNs(a.ts, b.ts) : compareNs(b.ts, a.ts)));
  logList.setEntries(withLevels(entries, 0), termsRegExp(filterTerms(query)));
  setSummary(`${formatCount(entries.length)} ${entries.length === 1 ? "line" : "lines"}`);
}

function showMetric(data, range, stepS) {
  $("logs").hidden = true;
  $("volume").hidden = true;
  logList.setEntries([], null);
  let result = data.result;
  if (data.resultType === "vector") result = result.map((s) => ({ metric: s.metric, values: [s.value] }));
  const series = fromMatrix(result || []);
  $("metric").hidden = false;
  chart.show(series, range.startMs, range.endMs, stepS * 1000);
  setSummary(`${formatCount(series.length)} series`);
}

async function loadSeries(query, range, signal) {
  const selector = streamSelector(query);
  if (!selector) return;
  try {
    seriesSets = await api.series(selector, range.startNs, range.endNs, signal);
  } catch {
    seriesSets = []; // then every label is shown as a stream label
  }
}

/** Count lines per step by level: a level label if the query has one, else a level word in the line. */
async function loadVolume(query, range, signal) {
  const step = histogramStep(range.endMs - range.startMs);
  const volumeQuery = `sum by (detected_level, level, lvl) (count_over_time(${query} | ${LEVEL_REGEXP_STAGE} [${step}s]))`;
  try {
    const data = await api.queryRange({ query: volumeQuery, start: range.startNs, end: range.endNs, step }, signal);
    const byLevel = new Map();
    for (const s of data.result) {
      const m = s.metric;
      const level = normalizeLevel(m.detected_level || m.level || m.lvl);
      const counts = byLevel.get(level) || new Map();
      for (const [t, v] of s.values) counts.set(t * 1000, (counts.get(t * 1000) || 0) + Number(v));
      byLevel.set(level, counts);
    }
    $("volume").hidden = false;
    histogram.show({ byLevel, stepMs: step * 1000, startMs: range.startMs, endMs: range.endMs });
  } catch (err) {
    if (err.name === "AbortError") return;
    $("volume").hidden = true; // the log query itself reports what is wrong
    histogram.clear();
  }
}

// ---- actions from the details of a line ----------------------------------------------------------------------

function addFilter(group, name, value, exclude, format) {
  let q = editor.value.trim();
  if (group === "stream") q = addSelectorMatcher(q, name, exclude ? "!=" : "=", value);
  else {
    // A parsed field exists for LogQL only after a parser stage: add the one that parsed it here.
    if (group === "fields" && format && !hasParser(q)) q = appendStage(q, format);
    q = appendStage(q, `${name}${exclude ? "!=" : "="}${quote(value)}`);
  }
  editor.value = q;
  run(true);
}

function traceQuery(value) {
  const selector = streamSelector(editor.value) || streamSelector(state.query) || '{service_name=~".+"}';
  return `${selector} |= ${quote(value)}`;
}

async function loadContext(entry, streamLabels) {
  const query = exactSelector(streamLabels);
  const hour = 3600n * 1000000000n;
  const ts = BigInt(entry.ts);
  const [before, after] = await Promise.all([
    api.queryRange({ query, start: (ts - hour).toString(), end: entry.ts, limit: CONTEXT_LINES, direction: "backward" }),
    api.queryRange({ query, start: addNs(entry.ts, 1), end: (ts + hour).toString(), limit: CONTEXT_LINES, direction: "forward" }),
  ]);
  const asc = (r) => entriesOf(r.result).sort((a, b) => compareNs(a.ts, b.ts));
  return { before: asc(before).slice(-CONTEXT_LINES), after: asc(after).slice(0, CONTEXT_LINES) };
}

// ---- live tail ----------------------------------------------------------------------------------------------

function startTail() {
  stopTail();
  if (controller) controller.abort();
  const query = state.query.trim();
  showError("");
  setTailUi(true);
  if (!query || !isLogQuery(query)) {
    showError("Live tail needs a log query, e.g. {app=\"api\"}.");
    return;
  }
  rememberQuery(query);
  $("volume").hidden = true;
  $("metric").hidden = true;
  $("logs").hidden = false;
  tailSeq = 0;
  dropped = 0;
  logList.setEntries([], termsRegExp(filterTerms(query)));
  const range = resolveRange(state.from, state.to);
  loadSeries(query, range, undefined);
  setSummary("0 lines");
  tail = new TailSession({
    query,
    limit: state.limit,
    startNs: range.startNs,
    cap: TAIL_CAP,
    onEntries: (batch) => {
      logList.append(withLevels(batch, tailSeq), TAIL_CAP);
      tailSeq += batch.length;
    },
    onRate: (rate) => {
      $("tail-rate").textContent = `${formatCount(Math.round(rate))} lines/s`;
      const lost = dropped ? ` (${formatCount(dropped)} dropped by the server)` : "";
      setSummary(`${formatCount(logList.length)} lines${lost}`);
    },
    onDropped: (n) => {
      dropped += n;
    },
    onEnd: async (reason, opened) => {
      tail = null;
      setTailUi(false);
      state.mode = "logs";
      writeState(state, false);
      // A refused handshake carries no text: ask the query API, which answers with the server's error.
      if (!opened) reason = (await queryProblem(query)) || reason;
      if (reason) showError(reason);
    },
  });
}

async function queryProblem(query) {
  const nowNs = BigInt(Date.now()) * 1000000n;
  try {
    await api.queryRange({ query, start: (nowNs - 1000000000n).toString(), end: nowNs.toString(), limit: 1 });
    return "";
  } catch (err) {
    return err.message;
  }
}

function stopTail() {
  if (tail) tail.close();
  tail = null;
  setTailUi(false);
}

function setTailUi(on) {
  $("tail-toggle").setAttribute("aria-pressed", String(on));
  $("pause").hidden = !on;
  $("pause").textContent = "Pause";
  $("tail-rate").hidden = !on;
  if (on) $("tail-rate").textContent = "0 lines/s";
}

// ---- controls -----------------------------------------------------------------------------------------------

function bindControls() {
  $("run").addEventListener("click", () => run(true));
  $("refresh").addEventListener("click", () => run(false));
  $("range").addEventListener("change", () => {
    const v = $("range").value;
    if (v === "custom") {
      const r = resolveRange(state.from, state.to);
      setRange(toUrlTime(r.startMs), toUrlTime(r.endMs));
    } else {
      setRange(`now-${v}`, "now");
      run(true);
    }
  });
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      const from = fromLocalInput($("from").value);
      const to = fromLocalInput($("to").value);
      if (from === null || to === null || to <= from) {
        showError("From must be before To.");
        return;
      }
      setRange(toUrlTime(from), toUrlTime(to));
      run(true);
    });
  }
  $("direction").addEventListener("change", () => run(true));
  $("limit").addEventListener("change", () => run(true));
  $("tail-toggle").addEventListener("click", () => {
    state.mode = tail ? "logs" : "tail";
    run(true);
  });
  $("pause").addEventListener("click", () => {
    if (!tail) return;
    const pausing = !tail.paused;
    if (pausing) tail.pause();
    else tail.resume();
    $("pause").textContent = pausing ? "Resume" : "Pause";
  });
  const browser = new LabelBrowser($("label-browser"), {
    sources,
    onUse: (selector) => {
      editor.value = selector;
      editor.focus();
    },
  });
  $("labels-button").addEventListener("click", () => browser.open());
  $("label-browser").addEventListener("close", () => $("labels-button").focus());
  bindHistory();
  window.addEventListener("popstate", () => {
    state = readState();
    applyStateToControls();
    run(false);
  });
}

function bindHistory() {
  const button = $("history-button");
  const box = $("history");
  const close = (refocus) => {
    list.hide();
    button.setAttribute("aria-expanded", "false");
    box.removeAttribute("aria-activedescendant");
    if (refocus) button.focus();
  };
  const list = new Listbox(box, (item) => {
    close(false);
    editor.value = item.label;
    editor.focus();
    run(true);
  });
  button.addEventListener("click", () => {
    if (list.open) return close(true);
    const items = loadHistory().map((q) => ({ label: q }));
    if (!items.length) items.push({ label: "", detail: "No queries run yet" });
    list.show(items.filter((i) => i.label));
    if (!list.open) {
      setSummary("No queries in the history yet.");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    box.setAttribute("aria-activedescendant", list.activeId);
    box.focus();
  });
  box.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      list.move(e.key === "ArrowDown" ? 1 : -1);
      box.setAttribute("aria-activedescendant", list.activeId);
    } else if (e.key === "Enter" && list.activeItem) {
      e.preventDefault();
      list.onAccept(list.activeItem);
    } else if (e.key === "Escape") {
      e.preventDefault();
      close(true);
    } else if (e.key === "Tab") close(false);
  });
  box.addEventListener("focusout", (e) => {
    if (!box.contains(e.relatedTarget) && e.relatedTarget !== button) close(false);
  });
}

setupTheme($("theme-toggle"));
bindControls();
applyStateToControls();
if (state.query) run(false);
else setSummary("Enter a LogQL query and press Run query (Ctrl+Enter).");
