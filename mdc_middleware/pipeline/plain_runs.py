"""Runs of captured requests that look alike, encoded together: what a scoring service receives almost always.

A run qualifies when every capture in it is of one route without field rules, header columns or a field path,
and both of its bodies are JSON (``application/json``, not compressed) holding plain rows: a list of rows, or
one under a known key and nothing else (``{"data": [[5.1, 3.5, 1.4, 0.2]]}`` in, ``{"predictions": [0]}`` or
``[0]`` out), rows as wide as the route's columns, cells that are numbers or text the csv module writes as it
is. Such a run is parsed, checked and written request by request, by orjson and C-level passes: no record,
no table, no CSV writer per request, and one orjson call for all the run's one-row requests.

Anything else and the whole run goes the general way (``encoder.encode_captures``), so a file's rows keep the
order the requests came in. Both ways give the same bytes, the same counts and the same notes on text
columns; a property test holds them to it.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple


from ..metrics import Metrics
from ..payloads.captured_request import Capture, blank_media_cells, mime_of, parse_json_payload
from ..payloads.schema import INPUT_KEYS, PREDICTION_KEYS, PayloadMismatch, default_names
from ..records.csv_encoding import plain_rows, row_suffixes, same_row_cells
from .encoder import (Encoded, as_utf8, day_folder, encode_captures, file_header, reserved_names, sampled_text_columns,
                      text_samples_left)

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
    """None, having counted nothing, when the run does not qualify.

    Capture by capture: each body is parsed, checked and, unless it is one row, written at once, so the run
    never holds more than one request's parsed JSON. A run's worth (16 requests of 100 rows: 1,600 lists)
    would pass the garbage collector's threshold and start its full collections, which pause the server."""
    plan = captures[0].plan
    schema = plan.route.schema
    if (plan.active_rules is not None or schema.input_field or schema.prediction_field or schema.media_fields
            or any(capture.plan is not plan or capture.headers for capture in captures)):
        return None
    inputs = _Side(schema.inputs, "feature", neutralize)
    predictions = _Side(schema.predictions, "prediction", neutralize)
    for capture in captures:
        values = _values(capture.request_body, capture.request_type, capture.request_encoding, _INPUT_KEYS)
        if values is None or not inputs.add(values):
            return None
        values = _values(capture.response_body, capture.response_type, capture.response_encoding, _PREDICTION_KEYS)
        if values is None or not predictions.add(values):
            return None
    if not inputs.finish() or not predictions.finish():
        return None
    # Counted only now: a run that did not qualify is counted by the general way alone.
    ids_and_times = [(c.correlation_id, c.timestamp, c.request_id) for c in captures]
    suffixes = row_suffixes(ids_and_times, plan.boundary, plan.inputs_target, neutralize)
    days = [int(c.timestamp // 86_400) for c in captures]
    by_day: Dict[int, List[int]] = {}  # day → the captures of that day, in order
    if days[0] == days[-1] and days.count(days[0]) == len(days):
        by_day[days[0]] = list(range(len(captures)))
    else:
        for index, day in enumerate(days):
            by_day.setdefault(day, []).append(index)
    pieces: List[Encoded] = []
    captured = 0
    for target, side in ((plan.inputs_target, inputs), (plan.predictions_target, predictions)):
        if not same_row_cells(target, plan.inputs_target, neutralize):
            suffixes_here = row_suffixes(ids_and_times, plan.boundary, target, neutralize)
        else:
            suffixes_here = suffixes
        columns = side.columns
        # What sampled_text_columns would say of each capture: it looks at the first few of a target only.
        sampled = [sampled_text_columns(target, columns, [row])
                   for row in side.first_rows[:text_samples_left(target, columns)]]
        lines = [text.replace("],[", suffix) + suffix if count > 1 else text + suffix
                 for text, count, suffix in zip(side.texts, side.counts, suffixes_here)]
        counts = side.counts
        for day, indices in by_day.items():
            if len(indices) == len(captures):  # all of one day, as nearly always
                rows, text, day_lines = sum(counts), frozenset().union(*sampled), lines
            else:
                rows = sum(counts[index] for index in indices)
                text = frozenset().union(*(sampled[index] for index in indices if index < len(sampled)))
                day_lines = [lines[index] for index in indices]
            pieces.append(Encoded(target, day_folder(target, day), file_header(columns),
                                  as_utf8(["".join(day_lines)], metrics), rows, text))
            captured += rows
    metrics.add("rows_captured", captured)
    metrics.add("rows_enqueued", captured)
    return pieces


class _Side:
    """One designation of a run, filled capture by capture as ``Schema`` tabulates it: a capture's values are
    rows (a list first) or scalars of one column (a row each). Keeps each capture's CSV cells (rows joined by
    "],[", ``csv_encoding.plain_rows``, which also checks every row is a list of plain cells as wide as the
    columns), its row count and first row; one-row captures are written together at the end, one orjson call."""

    __slots__ = ("declared", "prefix", "neutralize", "columns", "texts", "counts", "first_rows", "single")

    def __init__(self, declared: Optional[Sequence[str]], prefix: str, neutralize: bool) -> None:
        self.declared = declared
        self.prefix = prefix
        self.neutralize = neutralize
        self.columns: Tuple[str, ...] = ()
        self.texts: List[str] = []
        self.counts: List[int] = []
        self.first_rows: List[list] = []
        self.single: List[Tuple[int, list]] = []  # (where in texts, the row) of one-row captures

    def add(self, values: list) -> bool:
        if type(values[0]) is list:
            rows = values
        elif self.declared is not None and len(self.declared) != 1:
            return False  # several declared names and a flat list: maybe one row (the general way decides)
        else:
            rows = [values] if len(values) == 1 else [[value] for value in values]
        if not self.columns:
            width = len(rows[0])
            columns = tuple(self.declared) if self.declared is not None else default_names(self.prefix, width)
            if len(columns) != width or not width or reserved_names(columns):
                return False
            self.columns = columns
        if len(rows) == 1:
            self.single.append((len(self.texts), rows[0]))
            self.texts.append("")
        else:
            text = plain_rows(rows, len(self.columns), self.neutralize)
            if text is None or ('"' in text and blank_media_cells(rows)):
                return False  # a cell that needs quoting, a null, a bool, media in a string…: the general way
            self.texts.append(text)
        self.counts.append(len(rows))
        self.first_rows.append(rows[0])
        return True

    def finish(self) -> bool:
        """Write the one-row captures; False when one of them is not plain."""
        if not self.single:
            return True
        rows = [row for _, row in self.single]
        text = plain_rows(rows, len(self.columns), self.neutralize)
        if text is None or ('"' in text and blank_media_cells(rows)):
            return False
        for (index, _), line in zip(self.single, text.split("],[")):
            self.texts[index] = line
        return True


def _values(body: Any, content_type: str, encoding: str, keys: frozenset) -> Optional[list]:
    """A body's values (a non-empty list: rows, or scalars of one column), as the schema would find them;
    None unless the body is uncompressed JSON in one of the shapes this module takes. (What the parser reads
    and orjson could not write back as it was, NaN or integers past 64 bits, fails ``plain_rows`` later.)"""
    if type(body) is not bytes or encoding or mime_of(content_type) != "application/json":
        return None
    try:
        document = parse_json_payload(body)
    except PayloadMismatch:  # empty, media, invalid…: the general way says which and counts it
        return None
    if type(document) is dict:
        if len(document) != 1:
            return None
        key, document = next(iter(document.items()))
        if key not in keys:
            return None
    if type(document) is not list or not document or type(document[0]) is dict:
        return None
    return document
