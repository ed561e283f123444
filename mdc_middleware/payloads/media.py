"""Binary media detection: speech, images and video are never collected.

Checked by declared content type first (cheap, on the request path) and by the first bytes of a
body (a PNG sent as application/json is still an image).
"""
from __future__ import annotations

import functools
from typing import Optional

MEDIA_TYPE_PREFIXES = ("audio/", "image/", "video/")

# (offset, signature, kind)
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\x00\x00\x01\x00", "image/x-icon"),
    (0, b"8BPS", "image/vnd.adobe.photoshop"),
    (0, b"\xff\x0a", "image/jxl"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"#!AMR", "audio/amr"),
    (0, b"MThd", "audio/midi"),
    (0, b"\x1aE\xdf\xa3", "video/webm"),
    (0, b"FLV\x01", "video/x-flv"),
    (0, b"\x00\x00\x01\xba", "video/mpeg"),
    (0, b"\x00\x00\x01\xb3", "video/mpeg"),
    (0, b"0&\xb2u\x8ef\xcf\x11", "video/x-ms-asf"),
    (4, b"ftyp", "video/mp4"),  # mp4, mov, m4a, heic, avif: all ISO base media
)
_RIFF_KINDS = {b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo", b"WEBP": "image/webp"}
# MPEG audio frame sync (0xFFE/0xFFF) and AAC ADTS.
_MPEG_AUDIO_SECOND_BYTES = frozenset(range(0xE0, 0xFE))  # not 0xFE: the UTF-16 byte-order mark

# First bytes any signature at offset 0 can start with: most bodies ("{", "[") are rejected in one look.
_FIRST_BYTES = frozenset([signature[0] for offset, signature, _ in _MAGIC if offset == 0] + [ord("R"), 0xFF])

SNIFF_BYTES = 16
# Base64 prefixes of the same signatures, for media embedded in JSON strings.
_BASE64_PREFIXES = ("iVBORw0KGgo", "/9j/", "R0lGOD", "UklGR", "SUQz", "T2dnUw", "ZkxhQw", "AAAAIGZ0eXA",
                    "AAAAGGZ0eXA", "AAAAHGZ0eXA", "GkXfow")
_DATA_URI_PREFIXES = ("data:image/", "data:audio/", "data:video/")


def is_media_type(content_type: Optional[str]) -> bool:
    """True for audio/*, image/* and video/* content types (parameters ignored)."""
    if not content_type:
        return False
    return _is_media_type(content_type)


@functools.lru_cache(maxsize=512)
def _is_media_type(content_type: str) -> bool:  # a service sees a handful of content types, per request
    return content_type.strip().lower().startswith(MEDIA_TYPE_PREFIXES)


def sniff_media(head: bytes) -> Optional[str]:
    """The media type whose signature ``head`` starts with, or None."""
    if len(head) < 2 or (head[0] not in _FIRST_BYTES and head[4:8] != b"ftyp"):
        return None
    for offset, signature, kind in _MAGIC:
        if head[offset:offset + len(signature)] == signature:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[head[8:12]]
    if head[0] == 0xFF and head[1] in _MPEG_AUDIO_SECOND_BYTES and len(head) >= 4:
        return "audio/mpeg"
    return None


def is_media_text(value: str) -> bool:
    """True for a string that carries media: a data: URI or base64 of a known signature."""
    return value.startswith(_DATA_URI_PREFIXES) or (len(value) >= 64 and value.startswith(_BASE64_PREFIXES))
