"""The unit every part of the agent passes along: one log entry with its labels and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Entry:
    """One log entry on its way from a source, through the pipeline stages, to a client.

    `source`, `start` and `end` say where the entry's raw text lies in its file (byte offsets, [start, end)):
    stages must carry them along unchanged, and an entry made of several lines (multiline) spans from the
    first line's `start` to the last line's `end`. The agent advances a file's position only past entries the
    server acknowledged or the pipeline dropped, so a crash neither loses nor duplicates lines. Sources that
    are not files (syslog, push API) leave them empty.
    """

    labels: dict[str, str]
    line: str
    ts_ns: int
    extracted: dict[str, Any] = field(default_factory=dict)  # Promtail's extracted map, shared by the stages
    metadata: dict[str, str] = field(default_factory=dict)  # structured metadata sent with the entry
    tenant: str | None = None  # set by the `tenant` stage; overrides the client's tenant_id
    source: str = ""
    start: int = 0
    end: int = 0
