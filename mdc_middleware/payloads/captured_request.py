"""What one HTTP request leaves behind, shared by the ASGI and WSGI middleware.

On the request path only two things happen: body chunks are kept by reference (bounded, media types
never kept), and a plain tuple (``RawCapture``) is put on the queue when the response ends. Decoding,
JSON parsing and schema extraction run later, on the writer thread or in the encoder process, via
``Capture.from_raw(...).to_records``.
"""
from __future__ import annotations

import base64
import csv
import email.message
import email.parser
import email.policy
import functools
import io
import itertools
import json
import logging
import os
import random
import re
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union
from urllib.parse import parse_qsl

import orjson

from . import media
from ..metrics import Metrics
from ..storage.paths import Target
from .privacy import HEADER_PREFIX, MAX_HEADER_VALUE
from ..records.record import Record
from .schema import PayloadMismatch

if TYPE_CHECKING:
    from ..capture.policy import RoutePlan

logger = logging.getLogger("mdc_middleware")

REQUEST_ID_HEADERS = ("x-ms-request-id", "x-request-id")
_BODILESS_METHODS = frozenset(("GET", "HEAD", "DELETE"))
UNPARSED_COLUMNS = ("part", "reason", "content_type", "content_encoding", "bytes", "truncated", "body_encoding",
                    "body")
_warned: set = set()


def warn_once(key: Tuple[str, ...], message: str, *args: Any) -> None:
    """Log a problem once per (route, reason): a bad client must not flood the log."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)


class Skipped(NamedTuple):
    """A body that was not kept, and why: a reason counted under ``skipped_reasons`` (``body_too_large``,
    ``media_content_type``, ``body_not_read``…)."""

    reason: str


Body = Union[bytes, Skipped]  # a body as captured, or why it was not
BODY_NOT_READ = Skipped("body_not_read")  # the app answered before reading the request body to its end


class BoundedBody:
    """Keeps body chunks up to ``limit`` bytes; past it, or for a media type, keeps nothing and says why.

    Media sent under another type is recognised by its first bytes on the writer thread, which also
    sees them after decompression; the request path only compares the declared type.
    """

    __slots__ = ("limit", "chunks", "size", "skip_reason")

    def __init__(self, limit: int, content_type: Optional[str] = None) -> None:
        self.limit = limit
        self.chunks: List[bytes] = []
        self.size = 0
        self.skip_reason: Optional[str] = ("media_content_type" if content_type and media.is_media_type(content_type)
                                           else None)

    def feed(self, chunk: bytes) -> None:
        if self.skip_reason is not None or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self._skip("body_too_large")
            return
        self.chunks.append(bytes(chunk))

    def skip(self, reason: str) -> None:
        """Keep nothing, and say why (the first reason stands)."""
        if self.skip_reason is None:
            self._skip(reason)

    def _skip(self, reason: str) -> None:
        self.skip_reason = reason
        self.chunks = []

    def take(self) -> Body:
        """The body, or why it was not kept."""
        if self.skip_reason is not None:
            return Skipped(self.skip_reason)
        return b"".join(self.chunks)


def inputs_in_query(body: Body, method: str, query: Union[bytes, str],
                    headers: Dict[str, str]) -> Tuple[Body, Dict[str, str]]:
    """A request without a body carries its inputs in the query string (``GET /predict?x=1&y=2``): then the
    query string is the inputs, read as a form. A body, when there is one, stays the inputs. ``query``: ASGI's
    bytes, or WSGI's text (its bytes as latin-1, PEP 3333)."""
    if query and (body == b"" or (body == BODY_NOT_READ and method in _BODILESS_METHODS)):
        headers = {name: value for name, value in headers.items() if name != "content-encoding"}
        headers["content-type"] = "application/x-www-form-urlencoded"
        return (query.encode("latin-1", "replace") if isinstance(query, str) else query), headers
    return body, headers


def _new_id_prefix() -> str:
    bits = random.SystemRandom().getrandbits(72)
    text = f"{bits:018x}"
    return f"{text[:8]}-{text[8:12]}-4{text[12:15]}-{8 | (bits & 3):x}{text[15:18]}-"


_id_prefix = _new_id_prefix()
_id_counter = itertools.count()


def new_correlation_id() -> str:
    """A unique id shaped like a version-4 UUID: 72 random bits per process, then a counter.

    Correlation ids need to be unique, not unpredictable. Drawing 122 random bits per id cost a
    microsecond on the request path; a counter costs a tenth of that. A forked child draws its own
    prefix, so workers never share ids.
    """
    return f"{_id_prefix}{next(_id_counter) & 0xFFFF_FFFF_FFFF:012x}"


def _reset_ids_after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = _new_id_prefix(), itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids_after_fork)


def pick_request_id(headers: Mapping[str, str]) -> Optional[str]:
    """The client's request id, if it sent a usable one (short, printable)."""
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value and len(value) <= 128 and value.isprintable() and "," not in value:
            return value
    return None


# What the request path queues for each captured request: a plain tuple, the cheapest object Python
# makes, and one that pickles at C speed for the encoder process. ``Capture.from_raw`` reads it.
RawCapture = Tuple[
    int,                              # the route plan's id (policy.plan_by_id)
    Body,                             # the request body, or why it was not kept
    Dict[str, str],                   # the wanted request headers: lower-case name → value
    Body,                             # the response body, or why it was not kept
    str,                              # the response content type
    str,                              # the response content encoding
    str,                              # the correlation id
    str,                              # the request id
    float,                            # when the request arrived (epoch seconds)
]


def body_bytes(raw: RawCapture) -> int:
    """The bytes of the bodies a capture holds (a body not kept holds none)."""
    request, response = raw[1], raw[3]
    return (len(request) if type(request) is bytes else 0) + (len(response) if type(response) is bytes else 0)


_plans: List["RoutePlan"] = []
_plans_lock = threading.Lock()


def register_plan(plan: "RoutePlan") -> int:
    """A process-wide id for a route plan: what the request path queues instead of the plan."""
    with _plans_lock:
        _plans.append(plan)
        return len(_plans) - 1


def plan_by_id(plan_id: int) -> "RoutePlan":
    return _plans[plan_id]


@dataclass
class Capture:
    """One request/response pair, ready to become records (on the writer thread or the encoder process).

    What is the same for every request of a route (targets, field rules, limits) stays in its ``plan``.
    """

    plan: "RoutePlan"
    request_body: Body
    request_type: str
    request_encoding: str
    response_body: Body
    response_type: str
    response_encoding: str
    correlation_id: str
    request_id: str
    timestamp: float
    headers: Tuple[Tuple[str, str], ...] = ()  # the allowlisted request headers, for $mdc_header_ columns

    @classmethod
    def from_raw(cls, raw: RawCapture, plan: "RoutePlan") -> "Capture":
        (_, request_body, headers, response_body, response_type, response_encoding, correlation_id, request_id,
         timestamp) = raw
        found = dict(headers)
        kept = (tuple((name, found[name][:MAX_HEADER_VALUE]) for name in plan.collect_headers if name in found)
                if plan.collect_headers else ())
        return cls(plan, request_body, found.get("content-type", ""), found.get("content-encoding", ""),
                   response_body, response_type, response_encoding, correlation_id, request_id, timestamp, kept)

    def to_records(self, metrics: Metrics) -> List[Record]:
        records = []
        plan = self.plan
        for designation, target, body, ctype, encoding in (
            ("inputs", plan.inputs_target, self.request_body, self.request_type, self.request_encoding),
            ("predictions", plan.predictions_target, self.response_body, self.response_type,
             self.response_encoding),
        ):
            try:
                table = self._table(designation, body, ctype, encoding, metrics)
            except PayloadMismatch as exc:
                metrics.skip(f"{designation}:{exc.reason}")
                warn_once((plan.route.pattern, designation, exc.reason),
                          "mdc: %s of route %s not collected: %s (logged once per route and reason)",
                          designation, plan.route.pattern, exc)
                raw = self._unparsed(designation, exc.reason, body, ctype, encoding, metrics)
                if raw is not None:
                    records.append(raw)
                continue
            if table is None:
                continue
            columns, rows = table
            if not rows:
                metrics.skip(f"{designation}:empty")
                continue
            if designation == "inputs" and self.headers:
                columns = columns + tuple(HEADER_PREFIX + name for name, _ in self.headers)
                values = [value for _, value in self.headers]
                rows = [list(row) + values for row in rows]
            records.append(self._record(target, rows, columns))
        return records

    def _record(self, target: Target, rows: List[list], columns: Tuple[str, ...]) -> Record:
        return Record(target=target, data=rows, columns=columns, correlation_id=self.correlation_id,
                      timestamp=self.timestamp, request_id=self.request_id, boundary=self.plan.boundary,
                      rows=len(rows), rules=self.plan.active_rules)

    def _unparsed(self, designation: str, reason: str, body: Body, ctype: str, encoding: str,
                  metrics: Metrics) -> Optional[Record]:
        """The payload as received (truncated), when keeping unparseable payloads is on.

        Media is never kept, and neither is anything from a route with field rules: a payload that
        could not be parsed cannot be checked for the fields those rules withhold.
        """
        plan = self.plan
        if plan.unparsed_target is None or not isinstance(body, bytes) or not body or "media" in reason:
            return None
        if plan.rules.active:
            metrics.skip("unparsed:withheld_by_field_rules")
            return None
        kept = body[:plan.unparsed_max_bytes]
        try:
            text, body_encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            if exc.start >= len(kept) - 3 and len(body) > len(kept):  # cut inside a character
                text, body_encoding = kept[:exc.start].decode("utf-8"), "utf-8"
            else:
                text, body_encoding = base64.b64encode(kept).decode("ascii"), "base64"
        row = [designation, reason, ctype[:200], encoding[:50], len(body), len(body) > len(kept), body_encoding, text]
        return self._record(plan.unparsed_target, [row], UNPARSED_COLUMNS)

    def _table(self, designation: str, body: Body, ctype: str, encoding: str,
               metrics: Metrics) -> Optional[Tuple[Tuple[str, ...], List[list]]]:
        if isinstance(body, Skipped):
            metrics.skip(f"{designation}:{body.reason}")
            return None
        body = _decode_content(body, encoding, self.plan.max_body_bytes)
        payload = parse_payload(body, ctype, metrics, designation)
        if designation == "inputs":
            columns, rows = self.plan.route.schema.extract_inputs(payload)
        else:
            columns, rows = self.plan.route.schema.extract_predictions(payload)
        media_cells = blank_media_cells(rows)
        if media_cells:
            metrics.skip(f"{designation}:media_in_json", media_cells)
        return columns, rows


def _decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise PayloadMismatch("unsupported_content_encoding", encoding)
    wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, auto-detected
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PayloadMismatch("bad_content_encoding", str(exc)) from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise PayloadMismatch("body_too_large", "after decompression")
    if not decoder.eof:
        raise PayloadMismatch("bad_content_encoding", "truncated stream")
    return out


def parse_payload(body: bytes, content_type: str, metrics: Metrics, designation: str) -> Any:
    """A body as the value it holds, read by its content type; raises PayloadMismatch saying why it cannot be."""
    mime = mime_of(content_type)
    if mime == "application/json":  # what scoring clients send
        return parse_json_payload(body)
    _refuse_empty_or_media(body)
    if mime == "multipart/form-data":
        return _parse_multipart(body, content_type, metrics, designation)
    if mime == "application/x-www-form-urlencoded" and body.lstrip()[:1] not in (b"{", b"["):
        # A form never starts with a brace or bracket (browsers escape them): that is JSON sent with
        # curl -d, whose default content type this is. Apps that read the body as JSON serve it.
        return [dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))]
    if mime == "text/csv":
        return parse_csv(body)
    if mime in _JSON_LINES:
        return [parse_json(line) for line in body.splitlines() if line.strip()]
    if mime == "text/event-stream":  # server-sent events (a model streaming tokens): events, not a table
        raise PayloadMismatch("event_stream")
    try:
        payload = parse_json(body)
    except PayloadMismatch:
        if mime == "text/plain" or (mime == "text/html" and body.lstrip()[:1] != b"<"):
            return _plain_text(body, content_type)
        raise
    return _unwrapped(payload)


def parse_json_payload(body: bytes) -> Any:
    """A body sent as ``application/json``, read as ``parse_payload`` reads it."""
    _refuse_empty_or_media(body)
    return _unwrapped(parse_json(body))


def _refuse_empty_or_media(body: bytes) -> None:
    if not body or body.isspace():  # (what strip() would leave empty, without copying the body)
        raise PayloadMismatch("empty_body")
    if media.sniff_media(body[:media.SNIFF_BYTES]):  # whatever it claims to be; after decompression too
        raise PayloadMismatch("media_magic_bytes")


def _unwrapped(payload: Any) -> Any:
    """JSON encoded twice (a ported score.py's run() returns json.dumps(...) and FastAPI encodes that string
    again; clients post requests' json=json.dumps(...)): what the string holds. Else the payload."""
    if type(payload) is str and payload.lstrip()[:1] in ("{", "["):
        try:
            return parse_json(payload.encode("utf-8", "surrogatepass"))
        except PayloadMismatch:
            pass
    return payload


@functools.lru_cache(maxsize=256)  # a service sees a handful of content types
def mime_of(content_type: str) -> str:
    """The media type of a Content-Type header, without parameters, in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


# One JSON value a line (batch scoring clients, streamed predictions): a record or row per line.
_JSON_LINES = frozenset(("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonl",
                         "application/jsonlines", "application/x-jsonlines"))


def _plain_text(body: bytes, content_type: str) -> str:
    """Text that is not JSON is one value: the raw text a text model scores, or the label a route returns
    as a string (Flask sends a returned str as text/html). Markup is not a value: it stays invalid_json."""
    charset = email.message.Message()
    charset["content-type"] = content_type
    try:
        return body.decode(charset.get_content_charset() or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise PayloadMismatch("invalid_text", type(exc).__name__) from None


def parse_csv(body: bytes) -> List[Dict[str, Any]]:
    """Records of a CSV body, named by its first row.

    Lines may end in "\r\n", "\n" or a bare "\r" (``newline=""`` lets the csv module tell them from
    quoted ones). A repeated column name is numbered as pandas does ("a", "a.1"), so no cell overwrites
    another. A row with more cells than the header has cells no column can name: the body is refused
    (``ragged_rows``, as for JSON rows), not cut. A shorter row is padded with empty cells. What the csv
    module refuses (a field past its 128 KiB limit) is skipped too."""
    try:
        rows = [row for row in csv.reader(io.StringIO(body.decode("utf-8", "replace"), newline="")) if row]
    except csv.Error as exc:
        raise PayloadMismatch("invalid_csv", str(exc)) from None
    if not rows:
        return []
    names = _numbered_names(rows[0])
    width = len(names)
    empty = dict.fromkeys(names)
    records = []
    for row in rows[1:]:
        if len(row) > width:
            raise PayloadMismatch("ragged_rows", f"a row of {len(row)} cells under {width} column names")
        record = dict(zip(names, row))
        records.append(record if len(row) == width else {**empty, **record})
    return records


def _numbered_names(names: List[str]) -> List[str]:
    """Column names as pandas.read_csv makes them: an empty one is "Unnamed: <position>" (a frame written
    with its index), and a repeated one is numbered, the second "a" becoming "a.1" (or "a.2" when the
    header has its own "a.1"). Names the header gives win over those made up."""
    given = set(filter(None, names))
    unique: List[str] = []
    used: set = set()
    for position, name in enumerate(names):
        made_up = not name
        name = name or f"Unnamed: {position}"
        candidate, number = name, 0
        while candidate in used or ((made_up or candidate != name) and candidate in given):
            number += 1
            candidate = f"{name}.{number}"
        unique.append(candidate)
        used.add(candidate)
    return unique


# Digits become "0", "." and the exponent's "e" stay, all else is a blank: an integer literal of 19 digits
# or more is then a blank and nineteen "0"s (a fraction's digits follow a ".", an exponent's an "e").
_INTEGER_SHAPE = bytes(48 if 48 <= c <= 57 else c if c in b".eE" else 32 for c in range(256))
_LONG_INTEGER = b"0" * 19
_LONG_INTEGER_AFTER_BLANK = b" " + _LONG_INTEGER


# The same test as a pattern: nineteen digits, not after a digit, a "." or an exponent's "e". Faster than the
# translation on short bodies (one-row requests, predictions); its look-behind at every byte makes it slower on long ones.
_LONG_INTEGER_PATTERN = re.compile(rb"(?<![0-9.eE])[0-9]{19}")
_NINETEEN_DIGITS = re.compile(rb"[0-9]{19}")  # half the time; numbers of a scoring request have fewer
_PATTERN_UP_TO = 512


def may_hold_a_long_integer(body: bytes) -> bool:
    """Whether the body may hold an integer past 64 bits, which orjson would read as a float, rounded,
    without a word (99999999999999999999999 → 1e+23). In C: about a third of orjson's own time."""
    if len(body) <= _PATTERN_UP_TO:
        return (len(body) >= 19 and _NINETEEN_DIGITS.search(body) is not None
                and _LONG_INTEGER_PATTERN.search(body) is not None)
    shaped = body.translate(_INTEGER_SHAPE)
    return _LONG_INTEGER_AFTER_BLANK in shaped or shaped.startswith(_LONG_INTEGER)


def parse_json(body: bytes) -> Any:
    """orjson first (several times faster); the standard library for what orjson refuses or would read
    wrong, but JSON scoring clients send anyway: NaN and Infinity, integers past 64 bits (ids), lone
    surrogates, deep nesting."""
    if not may_hold_a_long_integer(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadMismatch("invalid_json", type(exc).__name__) from None


# Parts of a multipart body read at the most: Python's email parser takes ~0.1 ms a part, and a 900 KB body can
# hold 100,000 empty ones (13 s of CPU). A scoring form has a few fields.
MAX_MULTIPART_PARTS = 64
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def _parse_multipart(body: bytes, content_type: str, metrics: Metrics, designation: str) -> Any:
    """Form fields become one record; JSON parts are payloads; media parts are skipped and counted. A body of
    more than ``MAX_MULTIPART_PARTS`` parts is skipped (``too_many_parts``) before it is parsed."""
    boundary = _BOUNDARY.search(content_type)
    if boundary is None:
        raise PayloadMismatch("bad_multipart")
    if body.count(b"--" + boundary.group(1).strip().encode("latin-1", "replace")) > MAX_MULTIPART_PARTS + 1:
        raise PayloadMismatch("too_many_parts", f"more than {MAX_MULTIPART_PARTS} parts")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise PayloadMismatch("bad_multipart")
    fields: Dict[str, Any] = {}
    payload: Any = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or part.get_filename() or "part"
        part_type = part.get_content_type()
        raw = part.get_payload(decode=True) or b""
        if media.is_media_type(part_type) or media.sniff_media(raw[:media.SNIFF_BYTES]):
            metrics.skip(f"{designation}:media_multipart_part")
            continue
        if part_type == "application/json" or part_type.endswith("+json"):
            try:
                payload = parse_json(raw)
            except PayloadMismatch:
                metrics.skip(f"{designation}:invalid_json_part")
            continue
        if part_type.startswith("text/") or not part.get_filename():
            fields[str(name)] = raw.decode(part.get_content_charset() or "utf-8", "replace")
        else:
            metrics.skip(f"{designation}:binary_multipart_part")
    if payload is not None:
        return payload
    if not fields:
        raise PayloadMismatch("no_collectable_part")
    return [fields]


def blank_media_cells(rows: List[list]) -> int:
    """Media smuggled into JSON strings (data: URIs, base64 of image/audio/video) is never written."""
    if str not in set(map(type, itertools.chain.from_iterable(rows))):  # numbers only: one pass in C
        return 0
    blanked = 0
    for row in rows:
        for i, value in enumerate(row):
            if isinstance(value, str) and len(value) > 10 and media.is_media_text(value):
                row[i] = None
                blanked += 1
    return blanked
