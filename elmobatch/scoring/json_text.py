"""Values as JSON text, for the text outputs of `score`: a JSON Lines row (`json_line`) and a CSV
cell that holds a list, struct or map (`nested_as_json`). Numbers keep every digit; what JSON has no
type for is written as pandas' to_json wrote it (dates and times as epoch milliseconds)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd


def json_line(record: dict) -> str:
    """One row as a JSON object: numbers exactly as Python prints them (every digit that tells the
    float apart), NaN and infinities as null, and what JSON has no type for as pandas' to_json gives
    it: dates and times as epoch milliseconds, durations in milliseconds, decimals as text; bytes
    (a Parquet input's binary values) in Python's notation, b'\\xff', as the CSV writer gives them."""
    return _json_text({k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()})


def nested_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV cell cannot hold a list, struct or map: those values (a JSON or Parquet input's) are
    written as JSON text, as JSON Lines would write them, so any JSON parser reads them back."""
    columns = [c for c in frame.columns if frame[c].dtype == object and frame[c].map(_is_nested).any()]
    if not columns:
        return frame
    return frame.assign(**{c: frame[c].map(lambda v: _json_text(v) if _is_nested(v) else v) for c in columns})


def _is_nested(value) -> bool:
    return isinstance(value, (list, tuple, dict, np.ndarray))


def _json_text(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_value)
    except ValueError:  # a NaN inside a list or struct
        try:
            return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=_json_value)
        except RecursionError:  # nested too deep to walk in Python: NaN as the input wrote it
            return json.dumps(value, ensure_ascii=False, default=_json_value)


def _json_value(value):
    """What json.dumps cannot write itself (json.dumps calls this at any depth)."""
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, datetime):  # pd.Timestamp is one; milliseconds without nanoseconds (year 1 or 9999)
        return (value - datetime(1970, 1, 1, tzinfo=value.tzinfo and UTC)) // timedelta(milliseconds=1)
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days * 86_400_000
    if isinstance(value, timedelta):  # pd.Timedelta too
        return value // timedelta(milliseconds=1)
    return str(value)  # Decimal, time, ...


def _finite(value):
    """`value` with NaN and infinities as None, at any depth of lists and dicts (for the rare row
    that holds one inside: a Parquet list of floats, or a JSON input's NaN literal)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
