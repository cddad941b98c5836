"""Metric values over a step grid, and the operations between them: binary operators and label_replace."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from loglake.logql.errors import QueryError


@dataclass
class SeriesMatrix:
    """Per-series values at each step; `present` marks steps that have a value."""

    labels: list[dict[str, str]]
    values: np.ndarray
    present: np.ndarray
    ordered: bool = False  # keep this order in the answer (sort, sort_desc, topk, bottomk)
    scalar: bool = False  # a scalar (one unlabelled value per step), not a vector

    @staticmethod
    def constant(value: float, steps: int, scalar: bool) -> SeriesMatrix:
        """A scalar, or `vector(value)`: one unlabelled series with `value` at every step."""
        return SeriesMatrix([{}], np.full((1, steps), value), np.ones((1, steps), dtype=bool), scalar=scalar)


_ARITH = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,
    "^": np.power,
}
_COMPARE = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
}


def _apply(op: str, lv: np.ndarray, rv: np.ndarray, return_bool: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (values, keep) of `lv op rv`; keep is None for arithmetic (every sample stays)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op in _ARITH:
            values = _ARITH[op](lv, rv)
            if op in ("/", "%"):
                # Loki, unlike Prometheus, answers NaN (not ±Inf) for a division by zero.
                values = np.where(np.asarray(rv) == 0, np.nan, values)
            return values, None
        hit = _COMPARE[op](lv, rv)
    if return_bool:
        return hit.astype(np.float64), None
    return lv, hit


def binary(
    op: str,
    left: SeriesMatrix,
    right: SeriesMatrix,
    return_bool: bool = False,
    card: str = "one-to-one",
    on: bool = False,
    labels: tuple[str, ...] = (),
    include: tuple[str, ...] = (),
) -> SeriesMatrix:
    """Evaluate `left op right` with Prometheus' rules for scalars, vectors and vector matching."""
    if left.scalar and right.scalar:
        values, keep = _apply(op, left.values, right.values, True)
        return SeriesMatrix([{}], values, left.present & right.present, scalar=True)
    if left.scalar or right.scalar:
        vec, sc = (right, left) if left.scalar else (left, right)
        lv, rv = (sc.values, vec.values) if left.scalar else (vec.values, sc.values)
        values, keep = _apply(op, lv, rv, return_bool)
        if keep is not None:
            # A filtering comparison keeps the vector's own value.
            values = vec.values
        present = vec.present & sc.present & (keep if keep is not None else True)
        return SeriesMatrix([dict(s) for s in vec.labels], values, present)
    if op in ("and", "or", "unless"):
        return _set_op(op, left, right, on, labels)
    return _vector_match(op, left, right, return_bool, card, on, labels, include)


def _signature(lbls: dict[str, str], on: bool, labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if on:
        return tuple((k, lbls.get(k, "")) for k in sorted(labels))
    return tuple(sorted((k, v) for k, v in lbls.items() if k not in labels))


def _set_op(op: str, left: SeriesMatrix, right: SeriesMatrix, on: bool, labels: tuple[str, ...]) -> SeriesMatrix:
    steps = left.values.shape[1]
    right_present: dict[tuple, np.ndarray] = {}
    for lbls, pres in zip(right.labels, right.present, strict=True):
        sig = _signature(lbls, on, labels)
        right_present[sig] = right_present.get(sig, np.zeros(steps, dtype=bool)) | pres
    left_sigs = [_signature(lbls, on, labels) for lbls in left.labels]
    if op == "and":
        present = np.array(
            [p & right_present.get(s, False) for p, s in zip(left.present, left_sigs, strict=True)], dtype=bool
        )
        return SeriesMatrix(left.labels, left.values, present.reshape(left.present.shape))
    if op == "unless":
        present = np.array(
            [p & ~right_present.get(s, False) for p, s in zip(left.present, left_sigs, strict=True)], dtype=bool
        )
        return SeriesMatrix(left.labels, left.values, present.reshape(left.present.shape))
    left_present: dict[tuple, np.ndarray] = {}
    for sig, pres in zip(left_sigs, left.present, strict=True):
        left_present[sig] = left_present.get(sig, np.zeros(steps, dtype=bool)) | pres
    extra = [
        pres & ~left_present.get(_signature(lbls, on, labels), False)
        for lbls, pres in zip(right.labels, right.present, strict=True)
    ]
    present = np.vstack([left.present, *extra]) if extra else left.present
    values = np.vstack([left.values, right.values]) if extra else left.values
    return SeriesMatrix(left.labels + right.labels, values, present)


def _vector_match(
    op: str,
    left: SeriesMatrix,
    right: SeriesMatrix,
    return_bool: bool,
    card: str,
    on: bool,
    labels: tuple[str, ...],
    include: tuple[str, ...],
) -> SeriesMatrix:
    # The "many" side drives the result; group_right makes it the right-hand side.
    many, one = (right, left) if card == "one-to-many" else (left, right)
    one_by_sig: dict[tuple, int] = {}
    for j, lbls in enumerate(one.labels):
        sig = _signature(lbls, on, labels)
        if sig in one_by_sig:
            side = "left" if card == "one-to-many" else "right"
            raise QueryError(
                400,
                f"found duplicate series for the match group {dict(sig)} on the {side} hand-side of the operation; "
                "many-to-many matching not allowed: matching labels must be unique on one side",
            )
        one_by_sig[sig] = j
    seen: set[tuple] = set()
    out_labels, out_values, out_present = [], [], []
    for i, lbls in enumerate(many.labels):
        sig = _signature(lbls, on, labels)
        j = one_by_sig.get(sig)
        if j is None:
            continue
        if card == "one-to-one":
            if sig in seen:
                raise QueryError(
                    400, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )
            seen.add(sig)
        lv, rv = (one.values[j], many.values[i]) if card == "one-to-many" else (many.values[i], one.values[j])
        values, keep = _apply(op, lv, rv, return_bool)
        present = many.present[i] & one.present[j] & (keep if keep is not None else True)
        result = dict(lbls)
        if card == "one-to-one":
            result = dict(sig) if on else {k: v for k, v in result.items() if k not in labels}
        for name in include:
            if one.labels[j].get(name):
                result[name] = one.labels[j][name]
            else:
                result.pop(name, None)
        out_labels.append(result)
        out_values.append(values)
        out_present.append(present)
    steps = left.values.shape[1]
    if not out_labels:
        return SeriesMatrix([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))
    return SeriesMatrix(out_labels, np.array(out_values), np.array(out_present))


def label_replace(m: SeriesMatrix, dst: str, replacement: str, src: str, regex: str) -> SeriesMatrix:
    """Set `dst` from `replacement` where the whole value of `src` matches `regex` (Prometheus semantics)."""
    try:
        pattern = re.compile(f"^(?s:{regex})$")
    except re.error as exc:
        raise QueryError(400, f"invalid regular expression in label_replace(): {regex}: {exc}") from None
    template = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda g: f"\\g<{g.group(1) or g.group(2)}>", replacement)
    out = []
    for lbls in m.labels:
        match = pattern.match(lbls.get(src, ""))
        new = dict(lbls)
        if match:
            try:
                value = match.expand(template)
            except (IndexError, re.error):
                value = ""  # Go expands an unknown group to nothing
            if value:
                new[dst] = value
            else:
                new.pop(dst, None)
        out.append(new)
    return SeriesMatrix(out, m.values, m.present, m.ordered)
