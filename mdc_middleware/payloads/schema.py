"""Declared feature schemas: where the features live in a payload, and what they are called.

Scoring APIs disagree on payload shape; the schema turns each of the common ones into a table
(column names + rows). A payload that does not fit raises ``PayloadMismatch`` with a short reason,
which the caller counts and logs once per route.

Request shapes: ``{"data": [[...]]}`` (Azure ML score.py), ``{"input_data": {"columns", "index",
"data"}}`` (pandas split), ``[{"feat": ...}]`` records, ``{"instances": [...]}`` (KServe v1, TF
Serving), ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` (Open Inference Protocol v2),
``{"inputs": {"feat": [...]}}`` (columnar), ``{"dataframe_split"|"dataframe_records": ...}`` (MLflow).
Azure ML's AutoML and designer endpoints: ``{"Inputs": {"data"|"WebServiceInput0": [...]}, "GlobalParameters":
...}`` and ``{"Results": ...}`` (known keys match in any case); Studio (classic): ``{"ColumnNames", "Values"}``.
Response shapes: a list, ``{"predictions"|"result"|"outputs"|"output"|"prediction": ...}``.
"""
from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from ..storage.paths import as_component
from .privacy import FieldRules, Redactor

Table = Tuple[Tuple[str, ...], List[list]]

logger = logging.getLogger("mdc_middleware")

INPUT_KEYS = ("input_data", "data", "instances", "inputs", "dataframe_split", "dataframe_records")
PREDICTION_KEYS = ("predictions", "result", "results", "outputs", "output", "prediction", "scores")
_MAX_ENVELOPES = 8  # dicts around the rows: {"Inputs": {"input1": {"data": ...}}} is three


class PayloadMismatch(ValueError):
    """The payload does not have a shape the schema understands; ``reason`` is a short slug."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Schema:
    """What to collect from one route.

    ``inputs``/``predictions`` name the feature columns; when left out, names come from the
    payload (record keys, pandas columns, tensor names) or default to ``feature_<i>`` and
    ``prediction_<i>``. ``input_field``/``prediction_field`` point at the rows with a dotted path
    when the payload shape is unusual. ``media_fields`` are never written. ``include``/``exclude``
    (names or globs, any case) and ``redact`` (name → function of the value) keep personal data out
    of storage; see ``privacy.FieldRules``.
    """

    inputs: Optional[Sequence[str]] = None
    predictions: Optional[Sequence[str]] = None
    input_field: Optional[str] = None
    prediction_field: Optional[str] = None
    media_fields: Sequence[str] = field(default_factory=tuple)
    model_name: Optional[str] = None
    model_version: Optional[Union[str, int]] = None  # a number is its text
    include: Optional[Sequence[str]] = None
    exclude: Sequence[str] = field(default_factory=tuple)
    redact: Mapping[str, Redactor] = field(default_factory=dict, compare=False, hash=False)

    @property
    def rules(self) -> FieldRules:
        return FieldRules(include=self.include, exclude=tuple(self.exclude), redact=self.redact)

    def __post_init__(self) -> None:
        self.rules  # bad rules fail where the schema is declared
        for name in ("model_name", "model_version"):  # a version given as a number, as Azure ML numbers them
            object.__setattr__(self, name, as_component(getattr(self, name)))
        for name in ("inputs", "predictions", "media_fields", "include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"Schema.{name} must be a sequence of names, not a string")
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))

    def extract_inputs(self, payload: Any) -> Table:
        values, columns = _locate(payload, self.input_field, INPUT_KEYS, single_record_ok=True)
        return _tabulate(values, columns, self.inputs, "feature", self.media_fields)

    def extract_predictions(self, payload: Any) -> Table:
        values, columns = _locate(payload, self.prediction_field, PREDICTION_KEYS, single_record_ok=True)
        return _tabulate(values, columns, self.predictions, "prediction", self.media_fields)


def enveloped_rows(payload: dict) -> Optional[Tuple[list, Optional[List[str]]]]:
    """The rows of a payload handed over already parsed, as score.py does (``json.loads(raw_data)``):
    (rows, the column names it gives), or None when it is not wrapped in a known key. A dict whose other
    values are lists is columns, not an envelope: None."""
    key = _known_key(payload, (*INPUT_KEYS, *PREDICTION_KEYS))
    if key is None or any(isinstance(v, (list, tuple)) for k, v in payload.items() if k != key):
        return None
    values, columns = _rows_of(payload[key])
    if not isinstance(values, list) or not values or not all(isinstance(row, (list, dict)) for row in values):
        return None
    return values, columns


def _dig(payload: Any, dotted: str) -> Any:
    value = payload
    for key in dotted.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise PayloadMismatch("field_missing", dotted)
    return value


def _locate(payload: Any, dotted: Optional[str], keys: Sequence[str],
            single_record_ok: bool) -> Tuple[Any, Optional[Sequence[str]]]:
    """Find the rows in a payload; returns (values, column names the payload itself gives)."""
    value = _dig(payload, dotted) if dotted else payload
    if not isinstance(value, dict):
        return value, None
    if not dotted:
        key = _known_key(value, keys)
        if key is None:
            if single_record_ok and value and all(not isinstance(v, (dict, list)) for v in value.values()):
                return [value], None
            raise PayloadMismatch("unknown_shape", "no known key in " + ",".join(map(str, list(value)[:8])))
        value = value[key]
    return _rows_of(value)


def _rows_of(value: Any) -> Tuple[Any, Optional[Sequence[str]]]:
    """The rows inside what a known key (or a field path) points at, through a few envelopes."""
    if type(value) is list and (not value or type(value[0]) is not dict):  # rows already: no envelope, no tensors
        return value, None
    outer = value
    for _ in range(_MAX_ENVELOPES):
        if not isinstance(value, dict):
            break
        if "data" in value and isinstance(value.get("columns"), list):  # pandas split
            return value["data"], [str(c) for c in value["columns"]]
        names = value.get("ColumnNames")
        if isinstance(names, list) and "Values" in value:  # Azure ML Studio (classic) tables
            return value["Values"], [str(c) for c in names]
        if "data" in value:
            value = value["data"]
            continue
        if len(value) == 1:
            # One named input or output: Azure ML designer's {"WebServiceInput0": [records]}, Studio's
            # {"input1": {"ColumnNames", "Values"}}. A single column of numbers stays a column (below).
            inner = next(iter(value.values()))
            if isinstance(inner, dict) or (isinstance(inner, list) and inner and isinstance(inner[0], dict)):
                value = inner
                continue
        if value and all(isinstance(v, list) for v in value.values()):  # columnar {"a": [..], "b": [..]}
            lengths = {len(v) for v in value.values()}
            if len(lengths) != 1:
                raise PayloadMismatch("ragged_columns")
            return [list(row) for row in zip(*value.values())], list(value)
        return [value], None
    else:
        return [outer], None  # not envelopes: one record, its values as JSON cells
    if isinstance(value, list) and value and all(_is_named_tensor(v) for v in value):
        return _from_tensors(value)
    return value, None


def _known_key(payload: dict, keys: Sequence[str]) -> Optional[str]:
    """The first of ``keys`` in the payload; else the first in any case: Azure ML's AutoML and designer
    endpoints wrap rows in {"Inputs": ..., "GlobalParameters": ...} and answer {"Results": ...}."""
    for key in keys:
        if key in payload:
            return key
    lowered = {k.lower(): k for k in payload if isinstance(k, str)}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _is_named_tensor(value: Any) -> bool:
    return isinstance(value, dict) and "name" in value and "data" in value


def _flatten(value: Any) -> list:
    if isinstance(value, list):
        out: list = []
        for item in value:
            out.extend(_flatten(item))
        return out
    return [value]


def _from_tensors(tensors: list) -> Tuple[list, List[str]]:
    """Open Inference Protocol v2 named tensors → rows; one column per tensor element."""
    columns: List[str] = []
    blocks: List[list] = []
    batch: Optional[int] = None
    for tensor in tensors:
        flat = _flatten(tensor["data"])
        shape = tensor.get("shape") or [len(flat)]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise PayloadMismatch("bad_tensor_shape", str(tensor.get("name")))
        rows = shape[0] if len(shape) > 1 else len(flat)
        width = math.prod(shape[1:]) if len(shape) > 1 else 1
        if rows * width != len(flat):
            raise PayloadMismatch("bad_tensor_shape", f"{tensor.get('name')}: shape {shape} vs {len(flat)} values")
        if batch is None:
            batch = rows
        elif rows != batch:
            raise PayloadMismatch("ragged_tensors")
        name = str(tensor["name"])
        columns.extend([name] if width == 1 else [f"{name}_{i}" for i in range(width)])
        blocks.append([flat[r * width:(r + 1) * width] for r in range(rows)])
    rows_out = [sum((block[r] for block in blocks), []) for r in range(batch or 0)]
    return rows_out, columns


def _tabulate(values: Any, given: Optional[Sequence[str]], declared: Optional[Sequence[str]],
              prefix: str, media_fields: Sequence[str]) -> Table:
    if values is None:
        raise PayloadMismatch("null_payload")
    if not isinstance(values, list):
        values = [values]
    if not values:
        return (tuple(declared or given or ()), [])
    first = values[0]
    if isinstance(first, dict):
        if not all(isinstance(v, dict) for v in values):
            raise PayloadMismatch("mixed_rows")
        if declared is not None:
            names = tuple(declared)
            if not any(name in row for row in values for name in names):
                raise PayloadMismatch("no_declared_feature")
            if not all(name in first for name in names):
                _note_missing_declared(names, first)
        else:
            keys: dict = {}
            for row in values:
                keys.update(dict.fromkeys(row))
            names = tuple(str(k) for k in keys)
        names = tuple(n for n in names if n not in media_fields)
        return names, [[row.get(n) for n in names] for row in values]
    if isinstance(first, list):  # (checks written as set(map(...)): a pass in C, not a loop in Python)
        if set(map(type, values)) != {list}:
            raise PayloadMismatch("mixed_rows")
        width = len(first)
        if len(set(map(len, values))) != 1:
            raise PayloadMismatch("ragged_rows")
        if given is not None and declared is not None:
            index = {name: i for i, name in enumerate(given)}
            if not all(name in index for name in declared):
                raise PayloadMismatch("missing_declared_feature")
            picks = [index[name] for name in declared]
            values = [[row[i] for i in picks] for row in values]
            names = tuple(declared)
        else:
            names = tuple(declared or given or default_names(prefix, width))
            if len(names) != width:
                raise PayloadMismatch("width_mismatch", f"{width} values, {len(names)} names")
        return _drop_media_columns(names, values, media_fields)
    kinds = set(map(type, values))
    if list in kinds or dict in kinds:
        raise PayloadMismatch("mixed_rows")
    names = tuple(declared or given or (prefix,))
    if len(names) == len(values) > 1:  # one instance given as a flat list of its features
        return _drop_media_columns(names, [list(values)], media_fields)
    if len(names) != 1:
        raise PayloadMismatch("width_mismatch", f"1 value per row, {len(names)} names")
    return _drop_media_columns(names, [[v] for v in values], media_fields)


# (declared names, a name) already looked for among a record's keys: each pair once per process, at most this many.
_judged_names: set = set()
_MAX_JUDGED_NAMES = 4096


def _note_missing_declared(names: Tuple[str, ...], record: dict) -> None:
    """A declared column a record lacks is an empty cell (clients leave out empty fields), unless the record has
    a key like it that is not declared: then it is a typo in the Schema, said once (``sepal_lenght``)."""
    for name in names:
        if name in record or (names, name) in _judged_names or len(_judged_names) >= _MAX_JUDGED_NAMES:
            continue
        _judged_names.add((names, name))
        for _, like in names_like([name], [str(key) for key in record if key not in names]):
            logger.warning("mdc: the Schema declares column %r, which the records do not have, and they have %r, "
                           "which it does not declare: is it misspelt? Its cells are written empty", name, like)


def names_like(missing: Sequence[str], undeclared: Sequence[str]) -> List[Tuple[str, str]]:
    """(a declared name the data lacks, the data's undeclared name like it) for each that has one: likely typos."""
    return [(name, close[0]) for name in missing
            for close in [difflib.get_close_matches(str(name), undeclared, n=1, cutoff=0.8)] if close]


def default_names(prefix: str, width: int) -> Tuple[str, ...]:
    return (prefix,) if width == 1 else tuple(f"{prefix}_{i}" for i in range(width))


def _drop_media_columns(names: Tuple[str, ...], rows: List[list], media_fields: Sequence[str]) -> Table:
    if not media_fields or not any(n in media_fields for n in names):
        return names, rows
    keep = [i for i, n in enumerate(names) if n not in media_fields]
    return tuple(names[i] for i in keep), [[row[i] for i in keep] for row in rows]
