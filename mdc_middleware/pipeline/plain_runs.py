"""Runs of captured requests that look alike, encoded together: what a scoring service receives almost always.

A run qualifies when every capture in it is of one route without field rules, header columns or a field path,
and both of its bodies are JSON (``application/json``, not compressed) holding plain rows: a list of rows, or
one under a known key and nothing else (``{"data": [[5.1, 3.5, 1.4, 0.2]]}`` in, ``{"predictions": [0]}`` or
``[0]`` out), rows as wide as the route's columns, cells that are numbers or text the csv module writes as it
is. Such a run is parsed body by body, checked with a few passes in C over all its rows at once, and written
with one orjson call per designation: no record, no table, no CSV writer per request.

Anything else and the whole run goes the general way (``encoder.encode_captures``), so a file's rows keep the
order the requests came in. Both ways give the same bytes, the same counts and the same notes on text
columns; a property test holds them to it.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import orjson

from ..metrics import Metrics
from ..payloads.captured_request import Capture, blank_media_cells, may_hold_a_long_integer, mime_of
from ..payloads.media import SNIFF_BYTES, sniff_media
from ..payloads.schema import INPUT_KEYS, PREDICTION_KEYS, default_names
from ..records.csv_encoding import plain_rows, row_suffix
from ..storage.paths import Target
from .encoder import Encoded, as_utf8, day_folder, encode_captures, file_header, reserved_names, sampled_text_columns

logger = logging.getLogger("mdc_middleware")

_INPUT_KEYS = frozenset(INPUT_KEYS)
_PREDICTION_KEYS = frozenset(PREDICTION_KEYS)


def encode_run(captures: List[Capture], metrics: Metrics, neutralize_formulas: bool) -> List[Encoded]:
    """The captures' inputs and predictions as CSV, one piece per file and header, rows in the order the
    requests came: together when the run qualifies (see the module), else as ``encode_captures`` writes them."""
    if captures:
        try:
            encoded = _encode_plain_run(captures, metrics, neutralize_formulas)
        except Exception:  # a bug here must not cost the rows: the general way below writes them
            logger.exception("mdc: could not encode a run of captured requests together; encoding them one by one")
            metrics.add("internal_errors")
            encoded = None
        if encoded is not None:
            return encoded
    return encode_captures(captures, metrics, neutralize_formulas)


def _encode_plain_run(captures: List[Capture], metrics: Metrics, neutralize: bool) -> Optional[List[Encoded]]:
    """None, having counted nothing, when the run does not qualify."""
    plan = captures[0].plan
    schema = plan.route.schema
    if (plan.active_rules is not None or schema.input_field or schema.prediction_field or schema.media_fields
            or any(capture.plan is not plan or capture.headers for capture in captures)):
        return None
    inputs = _rows_of_bodies([c.request_body for c in captures], [c.request_type for c in captures],
                             [c.request_encoding for c in captures], _INPUT_KEYS)
    if inputs is None:
        return None
    predictions = _rows_of_bodies([c.response_body for c in captures], [c.response_type for c in captures],
                                  [c.response_encoding for c in captures], _PREDICTION_KEYS)
    if predictions is None:
        return None
    sides = []
    for designation, target, per_capture, declared, prefix in (
            ("inputs", plan.inputs_target, inputs, schema.inputs, "feature"),
            ("predictions", plan.predictions_target, predictions, schema.predictions, "prediction")):
        table = _table(per_capture, declared, prefix)
        if table is None:
            return None
        columns, rows = table
        if reserved_names(columns):
            return None
        texts = _plain_texts(rows, len(columns), neutralize)
        if texts is None:  # a cell that needs quoting, a null, a bool, media in a string…: the general way
            return None
        sides.append((designation, target, columns, rows, texts))
    # Counted only now: a run that did not qualify is counted by the general way alone.
    suffixes = [row_suffix(c.correlation_id, c.timestamp, plan.boundary, plan.inputs_target, c.request_id, neutralize)
                for c in captures]
    pieces: List[Encoded] = []
    captured = 0
    for designation, target, columns, rows, texts in sides:
        if target is not plan.inputs_target and not _same_cells(target, plan.inputs_target, plan.boundary,
                                                                  neutralize):
            suffixes_here = [row_suffix(c.correlation_id, c.timestamp, plan.boundary, target, c.request_id,
                                        neutralize) for c in captures]
        else:
            suffixes_here = suffixes
        days: Dict[int, Tuple[List[str], List[frozenset], List[int]]] = {}
        for capture, capture_rows, text, suffix in zip(captures, rows, texts, suffixes_here):
            parts, text_columns, counts = days.setdefault(int(capture.timestamp // 86_400), ([], [], [0]))
            parts.append(text.replace("],[", suffix) if len(capture_rows) > 1 else text)
            parts.append(suffix)
            text_columns.append(sampled_text_columns(target, columns, capture_rows))
            counts[0] += len(capture_rows)
        for day, (parts, text_columns, counts) in days.items():
            pieces.append(Encoded(target, day_folder(target, day), file_header(columns),
                                  as_utf8(["".join(parts)], metrics), counts[0], frozenset().union(*text_columns)))
            captured += counts[0]
    metrics.add("rows_captured", captured)
    metrics.add("rows_enqueued", captured)
    return pieces


def _plain_texts(rows: List[list], width: int, neutralize: bool) -> Optional[List[str]]:
    """Each capture's rows as CSV cells, rows joined by "],[" (see ``csv_encoding.plain_rows``, which also
    checks that every row is a list of ``width`` plain cells); None unless all are. One orjson call for a run
    of one-row requests, one a request otherwise."""
    if sum(map(len, rows)) == len(rows):
        text = plain_rows(list(itertools.chain.from_iterable(rows)), width, neutralize)
        if text is None:
            return None
        texts = text.split("],[")
    else:
        texts = []
        for capture_rows in rows:
            text = plain_rows(capture_rows, width, neutralize)
            if text is None:
                return None
            texts.append(text)
    if any('"' in text for text in texts) and blank_media_cells(list(itertools.chain.from_iterable(rows))):
        return None  # media in a string: the general way blanks and counts it
    return texts


def _same_cells(target: Target, other: Target, boundary: int, neutralize: bool) -> bool:
    """Whether rows of the two targets end with the same correlation cells (they differ by designation only)."""
    return row_suffix("", 0.0, boundary, target, "", neutralize) == row_suffix("", 0.0, boundary, other, "",
                                                                                 neutralize)


def _rows_of_bodies(bodies: Sequence[Any], types: Sequence[str], encodings: Sequence[str],
                    keys: frozenset) -> Optional[List[list]]:
    """Each body's values (a list: rows, or scalars of one column), as the schema would find them; None
    unless every body is plain JSON in one of the shapes this module takes."""
    if any(type(body) is not bytes for body in bodies) or any(encodings):
        return None
    if any(mime_of(content_type) != "application/json" for content_type in set(types)):
        return None
    if any(sniff_media(body[:SNIFF_BYTES]) for body in bodies):
        return None
    if may_hold_a_long_integer(b",".join(bodies)):  # (the comma keeps two bodies' digits apart)
        return None
    values = []
    loads = orjson.loads
    for body in bodies:
        try:
            document = loads(body)
        except orjson.JSONDecodeError:  # empty, NaN, invalid…: the general way says which
            return None
        if type(document) is dict:
            if len(document) != 1:
                return None
            key, document = next(iter(document.items()))
            if key not in keys:
                return None
        if type(document) is not list or not document or type(document[0]) is dict:
            return None
        values.append(document)
    return values


def _table(per_capture: List[list], declared: Optional[Sequence[str]], prefix: str
           ) -> Optional[Tuple[Tuple[str, ...], List[list]]]:
    """(columns, each capture's rows) as ``Schema`` tabulates them: each capture's values are rows (a list first)
    or scalars of one column (a row each). Whether every row then really is a list of plain cells as wide as
    the columns is ``plain_rows``'s check, made as it writes them."""
    rows = [values if type(values[0]) is list else [[value] for value in values] for values in per_capture]
    if declared is not None and len(declared) != 1 and any(type(values[0]) is not list for values in per_capture):
        return None  # several declared names and a flat list: maybe one row (the general way decides)
    width = len(rows[0][0])
    columns = tuple(declared) if declared is not None else default_names(prefix, width)
    if len(columns) != width or not width:
        return None
    return columns, rows
