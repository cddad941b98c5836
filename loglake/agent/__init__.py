"""loglake agent: a Promtail-compatible collector that tails files and ships them to a Loki-compatible server."""
