"""loglake: centralized logging that speaks Grafana Loki's API and LogQL, stored as Parquet."""

__version__ = "0.1.0"
