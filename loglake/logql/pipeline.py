"""Pipeline stages over columns: each row's labels as lazily built columns, and label filters on them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglake.logql import ast
from loglake.logql.linefilter import label_matcher_mask
from loglake.model import LabelSet


class LabelView:
    """The labels of selected rows — stream labels overlaid with structured metadata — one column per name."""

    def __init__(self, rows: pa.Table, streams: dict[int, LabelSet]) -> None:
        self.rows = rows
        self.streams = streams
        self._columns: dict[str, pa.Array] = {}
        self._sids: tuple[np.ndarray, np.ndarray] | None = None

    def column(self, name: str) -> pa.Array:
        """Return the value of label `name` for every row ("" where the row has no such label)."""
        col = self._columns.get(name)
        if col is None:
            col = self._columns[name] = self._build(name)
        return col

    def _build(self, name: str) -> pa.Array:
        if self._sids is None:
            uniq, inverse = np.unique(self.rows.column("stream_id").to_numpy(), return_inverse=True)
            self._sids = (uniq, inverse.reshape(-1))
        uniq, inverse = self._sids
        per_stream = np.array([dict(self.streams[s]).get(name, "") for s in uniq.tolist()], dtype=object)
        values = pa.array(per_stream[inverse] if len(inverse) else [], pa.string())
        if "metadata" in self.rows.column_names:
            meta = self.rows.column("metadata").combine_chunks()
            if meta.null_count < len(meta):
                from_meta = pc.map_lookup(meta, pa.scalar(name), "first").cast(pa.string())
                values = pc.coalesce(from_meta, values)
        return values


def filter_supported(f: ast.LabelFilter) -> bool:
    """Say whether `f` can run before any parser stage exists (string filters, combined with and/or)."""
    if isinstance(f, ast.BinaryLabelFilter):
        return filter_supported(f.left) and filter_supported(f.right)
    return isinstance(f, ast.StringLabelFilter)


def label_filter_mask(f: ast.LabelFilter, view: LabelView) -> np.ndarray:
    """Return which rows a label filter keeps."""
    if isinstance(f, ast.BinaryLabelFilter):
        left = label_filter_mask(f.left, view)
        right = label_filter_mask(f.right, view)
        return left & right if f.is_and else left | right
    if isinstance(f, ast.StringLabelFilter):
        return label_matcher_mask(f.matcher, view.column(f.matcher.name))
    raise TypeError(f"label filter {f} is not supported yet")
