"""Hostile requests: what a careless or malicious client can send to a scoring endpoint.

Each case names the outcome the middleware must reach for the request's inputs: ``rows`` (collected)
or the skip reason it must be counted under. Whatever the outcome, the response must be the one the
app gives without the middleware.
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Dict, Union

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64
LIMIT = 64 * 1024  # the capture limit the hostile tests run with


@dataclass
class Case:
    name: str
    body: bytes
    inputs: str                       # "rows" or the inputs skip reason; "a|b": either (ASGI and WSGI differ)
    content_type: str = "application/json"
    headers: Dict[str, str] = field(default_factory=dict)
    path: str = "/echo"
    chunked: bool = False             # send without content-length


def _gzip_bomb() -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        zero = b"\x00" * (1 << 20)
        for _ in range(64):  # 64 MiB of zeros in ~64 KiB
            out.write(zero)
    return buffer.getvalue()


def _multipart(parts: list, boundary: str = "XyZ") -> bytes:
    out = b""
    for name, content_type, payload, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
                .encode() + payload + b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


def corpus() -> list:
    image_b64 = base64.b64encode(PNG * 4).decode()
    deep = 100_000
    cases = [
        Case("valid rows", json.dumps({"data": [[1, 2], [3, 4]]}).encode(), "rows"),
        Case("malformed json", b'{"data": [[1, 2]', "invalid_json"),
        Case("trailing garbage", b'{"data": [[1, 2]]} xyz', "invalid_json"),
        Case("invalid utf-8", b'{"data": [["\xff\xfe\xfd"]]}', "invalid_json"),
        Case("utf-16 json", json.dumps({"data": [[1]]}).encode("utf-16"), "rows",
             content_type="application/json; charset=utf-16"),
        Case("nan and infinity", b'{"data": [[NaN, Infinity, -Infinity, 1e999]]}', "rows"),
        Case("huge integer", b'{"data": [[' + b"9" * 5000 + b"]]}", "invalid_json"),
        Case("deep nesting", b"[" * deep + b"]" * deep, "body_too_large"),
        Case("deep nesting under the limit", b'{"data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "invalid_json"),
        Case("empty body", b"", "empty_body|body_not_read"),  # a WSGI app may not read a body it was told is empty
        Case("whitespace body", b" \r\n\t ", "empty_body"),
        Case("json null", b"null", "null_payload"),
        Case("json scalar", b"42", "rows"),
        Case("json string", b'"=HYPERLINK(\\"http://evil\\")"', "rows"),
        Case("json string that looks like json", b'" [not json"', "rows"),
        Case("json lines", b'{"a": 1}\r\n{"a": 2, "b": [3]}\n', "rows", content_type="application/x-ndjson"),
        Case("json lines, the last cut short", b'{"a": 1}\n{"a": ', "invalid_json", content_type="application/jsonl"),
        Case("json encoded twice", json.dumps(json.dumps({"data": [[1, 2]]})).encode(), "rows"),
        Case("lone surrogate", b'{"data": [["\\ud800 alone"]]}', "rows"),
        Case("nul bytes and controls", b'{"data": [["a\\u0000b", "\\u001b[31mred", "x\\r\\ny", "bare\\rcr"]]}', "rows"),
        Case("formula injection", json.dumps({"data": [["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)"]]}).encode(),
             "rows"),
        Case("duplicate keys", b'[{"a": 1, "a": 2, "b": 3}]', "rows"),
        Case("hostile keys", json.dumps([{"../../etc/passwd": 1, "a,b\n\"c": 2, "\u202e": 3, "cr\rkey": 4}]).encode(), "rows"),
        Case("mixed row types", json.dumps({"data": [[1, "a", None, {"x": [1]}, True]]}).encode(), "rows"),
        Case("ragged rows", json.dumps({"data": [[1], [1, 2, 3], []]}).encode(), "ragged_rows"),
        Case("many tiny rows", json.dumps({"data": [[i] for i in range(5000)]}).encode(), "rows"),
        Case("one long string", json.dumps({"data": [["x" * 60_000]]}).encode(), "rows"),
        Case("over the capture limit", json.dumps({"data": [["x" * (LIMIT + 10)]]}).encode(), "body_too_large"),
        Case("png as json", PNG, "media_magic_bytes"),
        Case("jpeg as octet-stream", JPEG, "media_magic_bytes", content_type="application/octet-stream"),
        Case("wav as text", WAV, "media_magic_bytes", content_type="text/plain"),
        Case("gzipped png as json", gzip.compress(PNG), "media_magic_bytes", headers={"content-encoding": "gzip"}),
        Case("png as csv", PNG, "media_magic_bytes", content_type="text/csv"),
        Case("image content type", b"not really an image", "media_content_type", content_type="image/png"),
        Case("audio content type", b"\x00\x01", "media_content_type", content_type="audio/wav"),
        Case("video content type", b"\x00\x01", "media_content_type", content_type="video/mp4"),
        Case("base64 image in json", json.dumps({"data": [[1, image_b64]]}).encode(), "rows"),
        Case("data uri in json", json.dumps({"data": [[1, "data:image/png;base64," + image_b64]]}).encode(), "rows"),
        Case("gzip bomb", _gzip_bomb(), "body_too_large", headers={"content-encoding": "gzip"}),
        Case("bad gzip", b"\x1f\x8b\x08\x00garbage", "bad_content_encoding", headers={"content-encoding": "gzip"}),
        Case("valid gzip", gzip.compress(json.dumps({"data": [[5, 6]]}).encode()), "rows",
             headers={"content-encoding": "gzip"}),
        Case("deflate", zlib.compress(json.dumps({"data": [[7, 8]]}).encode()), "rows",
             headers={"content-encoding": "deflate"}),
        Case("brotli unsupported", b"\x8b\x02\x80", "unsupported_content_encoding", headers={"content-encoding": "br"}),
        Case("json sent as text/plain", json.dumps({"data": [[1, 2]]}).encode(), "rows", content_type="text/plain"),
        Case("no content type", json.dumps({"data": [[1, 2]]}).encode(), "rows", content_type=""),
        Case("form as json", b"a=1&b=%ZZ&c", "invalid_json"),
        Case("form urlencoded", b"a=1&b=%ZZ&c=&=x", "rows", content_type="application/x-www-form-urlencoded"),
        Case("json with curl -d's form type", b' {"data": [[1, 2]]}', "rows",
             content_type="application/x-www-form-urlencoded"),
        Case("malformed json with a form type", b'[[1, 2]', "invalid_json",
             content_type="application/x-www-form-urlencoded"),
        Case("csv with open quote", b'a,b\n1,"2\n3,4', "rows", content_type="text/csv"),
        Case("csv with bare carriage returns", b'a,b\r1,"x\ry"\r3,4\r', "rows", content_type="text/csv"),
        Case("csv with a ragged row", b"a,b\n1,2\n3,4,5\n", "ragged_rows", content_type="text/csv"),
        Case("csv with a repeated name", b"a,b,a\n1,2,3\n", "rows", content_type="text/csv"),
        Case("multipart with image", _multipart([("meta", "application/json", b'{"data": [[1, 2]]}', None),
                                                 ("photo", "image/png", PNG, "p.png")]), "rows",
             content_type="multipart/form-data; boundary=XyZ"),
        Case("multipart bad boundary", b"--nope\r\n\r\nx", "bad_multipart", content_type="multipart/form-data"),
        Case("chunked valid", json.dumps({"data": [[9, 9]]}).encode(), "rows", chunked=True),
        Case("chunked over the limit", b'{"data": [["' + b"y" * (LIMIT * 3) + b'"]]}', "body_too_large", chunked=True),
        Case("long request id", json.dumps({"data": [[1]]}).encode(), "rows", headers={"x-request-id": "r" * 5000}),
        Case("request id with controls", json.dumps({"data": [[1]]}).encode(), "rows",
             headers={"x-request-id": "a\tb"}),
        Case("credentials in headers", json.dumps({"data": [[1]]}).encode(), "rows",
             headers={"authorization": "Bearer SECRET-TOKEN-1", "cookie": "session=SECRET-COOKIE-1"}),
        # The app answers these with an error of its own: nothing of a failed request is collected.
        # Starlette's 500 is sent by its outermost layer, outside any middleware: "response_incomplete".
        Case("score: malformed json", b'{"data": [[1, 2]', "response_incomplete|status_400|status_500",
             path="/score"),
        Case("score: wrong shape", b'{"rows": 3}', "response_incomplete|status_500", path="/score"),
        Case("stream: valid", json.dumps({"data": [[1, 2], [3, 4]]}).encode(), "rows", path="/stream"),
        Case("stream: malformed", b"{{{", "invalid_json", path="/stream"),
        Case("app raises", json.dumps({"data": [[1]]}).encode(), "response_incomplete|status_500", path="/boom"),
    ]
    return cases


def body_of(case: Case) -> Union[bytes, object]:
    if not case.chunked:
        return case.body
    return iter([case.body[i:i + 4096] for i in range(0, len(case.body), 4096)])
