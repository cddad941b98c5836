"""The error a query answers with: an HTTP status and Loki's message."""

from __future__ import annotations


class QueryError(Exception):
    """A query that cannot be answered: HTTP status and Loki's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
