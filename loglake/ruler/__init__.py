"""The ruler: LogQL alerting and recording rules, their storage, evaluation and notifications."""
