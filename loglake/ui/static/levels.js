// The level of a log line: from its labels, else from its text.

const ALIASES = {
  emerg: "critical", alert: "critical", crit: "critical", critical: "critical", fatal: "critical", panic: "critical",
  err: "error", error: "error", eror: "error",
  warn: "warn", warning: "warn",
  info: "info", information: "info", notice: "info",
  debug: "debug", dbug: "debug",
  trace: "trace",
};
export const LEVELS = ["critical", "error", "warn", "info", "debug", "trace", "unknown"];

const FIELD_RE = /(?:^|[\s{,])"?(?:level|lvl|severity|loglevel)"?\s*[:=]\s*"?([A-Za-z]+)/i;
const WORD_RE = /\b(EMERG|ALERT|CRIT(?:ICAL)?|FATAL|PANIC|ERR(?:OR)?|WARN(?:ING)?|INFO|NOTICE|DEBUG|TRACE)\b/i;

/** One of LEVELS for a level name as logs spell it (`ERR`, `warning`, ...). */
export function normalizeLevel(name) {
  return ALIASES[String(name || "").toLowerCase()] || "unknown";
}

/** The level of an entry: `detected_level`/`level` labels first, then a level field, then a level word. */
export function detectLevel(labels, line) {
  for (const key of ["detected_level", "level", "severity", "lvl"]) {
    if (labels && labels[key]) {
      const lvl = normalizeLevel(labels[key]);
      if (lvl !== "unknown") return lvl;
    }
  }
  const head = line.length > 2000 ? line.slice(0, 2000) : line;
  const field = FIELD_RE.exec(head);
  if (field) {
    const lvl = normalizeLevel(field[1]);
    if (lvl !== "unknown") return lvl;
  }
  const word = WORD_RE.exec(head);
  return word ? normalizeLevel(word[1]) : "unknown";
}

/** A LogQL regexp stage that extracts a level word from a line into label `lvl` (for the volume histogram). */
export const LEVEL_REGEXP_STAGE =
  "regexp `(?i)\\b(?P<lvl>emerg|alert|critical|crit|fatal|panic|error|err|warning|warn|information|info|notice|debug|trace)\\b`";
