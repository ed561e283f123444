"""Azure Blob Storage: one append blob per day and header, appended in blocks, exactly once.

Correctness rests on the service's append-position condition:
- the header is appended with ``appendpos=0``, so among any number of replicas exactly one header
  lands, and rows are appended only after a header is in place;
- every block is appended with ``appendpos=<the size we believe the blob has>``. After an ambiguous
  failure (a timeout or reset: the block may have landed), the retry hits "position not met"; we then
  read the blob at that position, and if our bytes are there the block is done, else it is appended
  at the new end. No row is written twice, none is lost.
A blob that reached its block limit, or holds another header, is never appended to: writing rolls
over to ``data_1.csv``, ``data_2.csv``…

The SDK's own retries are off (``retry_total=0``); tenacity retries transient faults with
exponential backoff and jitter up to a deadline, so the two never multiply.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from azure.core import MatchConditions
from azure.core.exceptions import (AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceNotFoundError, ServiceRequestError, ServiceResponseError)
from azure.storage.blob import BlobServiceClient, ContainerClient
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from ..config import ConfigError, Settings
from ..metrics import Metrics
from .paths import file_name, file_part
from ..records.csv_scanning import last_row_end
from .sink import Deadline, SinkError

logger = logging.getLogger("mdc_middleware")

MAX_BLOCK_BYTES = 4 * 1024 * 1024   # Append Block limit (DESIGN.md)
MAX_BLOCKS = 50_000                 # committed blocks per append blob
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CLIENT_OPTIONS = dict(retry_total=0, connection_timeout=10, read_timeout=20)


class _Moved(Exception):
    """The blob changed under us (position taken, blob full, blob gone): try again at once."""


def describe(exc: BaseException) -> str:
    """A short, secret-free description of what went wrong, for a person: the cause (connection refused,
    DNS, TLS, authentication, a timeout), or the HTTP status and service error code. Never the exception's
    message (it may quote a URL with a SAS), never an internal class name."""
    if isinstance(exc, _Moved):
        return "the file changed under us (another replica appended, or it filled up) until the deadline"
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = _error_code(exc)
        if exc.status_code in (401, 403):
            return (f"authentication or permission refused (HTTP {exc.status_code}{', ' + code if code else ''}): "
                    "check the account key, SAS or role")
        return f"HTTP {exc.status_code}{' ' + code if code else ''}"
    text = _exception_chain_text(exc)
    for needles, cause in _CAUSES:
        if any(needle in text for needle in needles):
            return cause
    return type(exc).__name__


_CAUSES = (
    (("connection refused", "errno 111"), "connection refused (nothing listens at that address and port)"),
    (("name or service not known", "temporary failure in name resolution", "nodename nor servname",
      "getaddrinfo failed", "no address associated"), "DNS lookup failed (check the account name or endpoint)"),
    (("certificate", "ssl", "tls"), "TLS handshake failed (check the endpoint's certificate and https)"),
    (("timed out", "timeout"), "timed out"),
    (("connection reset", "reset by peer", "connection aborted", "remote end closed", "broken pipe"),
     "connection reset"),
)


def _exception_chain_text(exc: BaseException) -> str:
    """The messages of an exception and those it wraps, lower-cased: searched for a cause, never shown."""
    parts, seen = [], set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        parts.append(f"{type(current).__name__} {current}")
        inner = getattr(current, "inner_exception", None) or getattr(current, "exc_value", None)
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return " ".join(parts).lower()


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _Moved):
        return True
    if isinstance(exc, ClientAuthenticationError):
        return False
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code is None
    return isinstance(exc, AzureError)


# What the writer does in the container: create append blobs, append to them, list a day's files, read a file's
# header and size (and, after an ambiguous failure, whether its block landed).
NEEDED_PERMISSIONS = "read, add, create, write and list (SAS permissions 'racwl')"


def _permissions_hint(exc: BaseException) -> str:
    if isinstance(exc, HttpResponseError) and _error_code(exc) in ("AuthorizationPermissionMismatch",
                                                                    "AuthorizationResourceTypeMismatch"):
        return f"; the credential needs {NEEDED_PERMISSIONS} on the container"
    return ""


def _error_code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


@dataclass
class _OpenFile:
    name: str
    part: int
    size: int
    blocks: int


class BlobSink:
    """Appends CSV batches to append blobs in one container."""

    def __init__(self, client_factory: Callable[[], BlobServiceClient], container: str, *,
                 max_block_bytes: int = MAX_BLOCK_BYTES, max_blocks: int = MAX_BLOCKS,
                 metrics: Optional[Metrics] = None, description: str = "blob storage") -> None:
        if not 0 < max_block_bytes <= MAX_BLOCK_BYTES:
            raise ConfigError(f"max_block_bytes: must be between 1 and {MAX_BLOCK_BYTES}")
        self._client_factory = client_factory
        self.container_name = container
        self.max_block_bytes = max_block_bytes
        self.max_blocks = max_blocks
        self.metrics = metrics or Metrics()
        self.description = description
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._service: Optional[BlobServiceClient] = None
        self._container: Optional[ContainerClient] = None
        self._container_ready = False
        self._may_create = True
        self._files: Dict[Tuple[str, str, str], _OpenFile] = {}
        self._last_attempt: Optional[Tuple[str, int]] = None
        self._on_attempt: Optional[Callable[[str, int], None]] = None
        self._trouble: Dict[str, float] = {}  # cause → when last logged

    def __repr__(self) -> str:
        return f"BlobSink({self.description}, container={self.container_name!r})"

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Optional[Metrics] = None, **options: Any) -> "BlobSink":
        return cls(client_factory(settings), settings.container, metrics=metrics,
                   description=settings.storage_endpoint, **options)

    # ---- the Sink interface ---------------------------------------------------------------------
    reports_attempts = True  # append() takes on_attempt

    def append(self, folder: str, stem: str, header: str, payload: bytes,
               deadline: Deadline = None, hint: Optional[Tuple[str, int]] = None,
               on_attempt: Optional[Callable[[str, int], None]] = None) -> None:
        """The Sink contract; ``on_attempt(blob name, position)`` is called before each try of the first block,
        so that a process killed while it was on its way can tell its successor where to look (a ``hint``)."""
        if deadline is None:
            deadline = time.monotonic() + 60.0
        key = (folder, stem, header)
        header_bytes = header.encode("utf-8")
        delivered = 0
        with self._lock:
            self._last_attempt = None
            self._on_attempt = on_attempt
            for block in split_blocks(payload, self.max_block_bytes):
                try:
                    if hint is not None and self._hinted_block_landed(hint, block):
                        logger.info("mdc: a block from an earlier, ambiguous try had landed; not sent again")
                    else:
                        self._retrying(deadline, lambda: self._append_block(key, header_bytes, block))
                except SinkError as exc:
                    exc.delivered, exc.hint = delivered, self._last_attempt
                    raise
                hint = None
                self._on_attempt = None
                delivered += len(block)
            self._report_recovery()

    def _hinted_block_landed(self, hint: Tuple[str, int], block: bytes) -> bool:
        def check() -> bool:
            return self._landed(self._container_client().get_blob_client(hint[0]), hint[1], block)

        result: list = []
        self._retrying(time.monotonic() + 30.0, lambda: result.append(check()))
        return bool(result and result[-1])

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._reset()  # connection pools must not be shared with the parent

    def close(self) -> None:
        if self._service is not None:
            try:
                self._service.close()
            except Exception:
                pass
        self._reset()

    # ---- retries ----------------------------------------------------------------------------------
    def _retrying(self, deadline: Deadline, action: Callable[[], None]) -> None:
        def deadline_now() -> float:
            return deadline() if callable(deadline) else deadline  # type: ignore[return-value]

        def out_of_time(state: RetryCallState) -> bool:
            return time.monotonic() >= deadline_now()

        def sleep(seconds: float) -> None:  # never past the deadline: a shutdown is not kept waiting
            time.sleep(max(0.0, min(seconds, deadline_now() - time.monotonic())))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None and not isinstance(exc, _Moved):
                self.metrics.add("storage_retries")
                self._report_trouble(exc)

        try:
            for attempt in Retrying(retry=retry_if_exception(is_transient), stop=out_of_time,
                                    wait=wait_random_exponential(multiplier=0.1, max=5.0),
                                    sleep=sleep, before_sleep=before_sleep, reraise=True):
                with attempt:
                    action()
        except SinkError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            raise SinkError(f"{self.description}: {describe(exc)}"
                            + (" (retry deadline passed)" if transient else "") + _permissions_hint(exc),
                            permanent=not transient) from None

    def _report_trouble(self, exc: BaseException) -> None:
        """The first failure of a streak is logged at once (not after the retry deadline), naming where and
        why; the same cause again at most once a minute."""
        cause = describe(exc)
        now = time.monotonic()
        if self._trouble.get(cause, -1e9) + 60.0 <= now:
            self._trouble[cause] = now
            logger.warning("mdc: storage at %s: %s; retrying until the retry deadline, rows are kept",
                           self.description, cause)

    def _report_recovery(self) -> None:
        if self._trouble:
            self._trouble.clear()
            logger.warning("mdc: storage at %s answers again", self.description)

    # ---- the work -------------------------------------------------------------------------------
    def _container_client(self) -> ContainerClient:
        if self._container is None:
            self._service = self._client_factory()
            self._container = self._service.get_container_client(self.container_name)
        if not self._container_ready:
            try:
                self._container.create_container()
                self._may_create = True
            except ResourceExistsError:
                self._may_create = True
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise
                # A SAS or a role scoped to the container lets us write in it but not create it (only the
                # account may): take it as there. If it is not, appends say so (ContainerNotFound).
                self._may_create = False
            self._container_ready = True
        return self._container

    def _append_block(self, key: Tuple[str, str, str], header: bytes, block: bytes) -> None:
        try:
            self._append_block_once(key, header, block)
        except ResourceNotFoundError as exc:
            if _error_code(exc) != "ContainerNotFound":
                raise
            if not self._may_create:
                raise SinkError(f"{self.description}: container {self.container_name!r} does not exist, and the "
                                "credential may not create it", permanent=True) from None
            self._container_ready = False  # deleted under us: create it again
            self._files.clear()
            raise _Moved() from None

    def _append_block_once(self, key: Tuple[str, str, str], header: bytes, block: bytes) -> None:
        current = self._files.get(key) or self._open(key, header, None)
        self._files[key] = current
        blob = self._container_client().get_blob_client(current.name)
        position = current.size
        self._last_attempt = (current.name, position)
        if self._on_attempt is not None:
            self._on_attempt(current.name, position)
        try:
            result = blob.append_block(block, appendpos_condition=position)
        except HttpResponseError as exc:
            code = _error_code(exc)
            if code == "AppendPositionConditionNotMet":
                if self._landed(blob, position, block):
                    self._advance(current, position + len(block), None)
                    return
                self.metrics.add("storage_conflicts")  # another writer appended first: read the end, try again
                properties = blob.get_blob_properties()
                current.size, current.blocks = properties.size, properties.append_blob_committed_block_count or 0
                raise _Moved() from None
            if code in ("BlockCountExceedsLimit", "MaxBlobSizeConditionNotMet"):
                self._roll_over(key, current, header)
                raise _Moved() from None
            if code == "BlobNotFound":
                self._files.pop(key, None)
                raise _Moved() from None
            raise
        self._advance(current, position + len(block), result.get("blob_committed_block_count"))
        if current.blocks >= self.max_blocks:
            self._roll_over(key, current, header)

    def _advance(self, current: _OpenFile, size: int, blocks: Optional[int]) -> None:
        current.size = size
        current.blocks = int(blocks) if blocks is not None else current.blocks + 1

    def _landed(self, blob: Any, position: int, block: bytes) -> bool:
        """After an ambiguous failure: are our bytes already at ``position``?"""
        try:
            found = blob.download_blob(offset=position, length=len(block)).readall()
        except HttpResponseError as exc:
            if exc.status_code in (404, 416):  # no blob, or nothing at that position: it did not land
                return False
            raise  # unknown: let the caller retry rather than guess
        return found == block

    def _roll_over(self, key: Tuple[str, str, str], current: _OpenFile, header: bytes) -> None:
        self._files[key] = self._open(key, header, current.part + 1)
        self.metrics.add("files_rolled_over")

    def _open(self, key: Tuple[str, str, str], header: bytes, start_part: Optional[int]) -> _OpenFile:
        """The first usable file from ``start_part`` (default: the newest that exists), header in place."""
        folder, stem, _ = key
        container = self._container_client()
        if start_part is None:
            parts = [file_part(b.name.rsplit("/", 1)[-1], stem)
                     for b in container.list_blobs(name_starts_with=f"{folder}/{stem}")]
            start_part = max([p for p in parts if p is not None], default=0)
        part = start_part
        while True:
            name = f"{folder}/{file_name(stem, part)}"
            opened = self._open_one(container, name, part, header)
            if opened is not None:
                return opened
            part += 1

    def _open_one(self, container: ContainerClient, name: str, part: int, header: bytes) -> Optional[_OpenFile]:
        blob = container.get_blob_client(name)
        try:
            blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            self.metrics.add("files_created")
        except ResourceExistsError:
            pass
        if header:  # JSON Lines files have none
            try:
                blob.append_block(header, appendpos_condition=0)  # lands once, whoever gets there first
            except HttpResponseError as exc:
                code = _error_code(exc)
                if code == "InvalidBlobType":
                    return None  # someone put a block blob here: leave it alone
                if code != "AppendPositionConditionNotMet":
                    raise
        properties = blob.get_blob_properties()
        if str(getattr(properties.blob_type, "value", properties.blob_type)) != "AppendBlob":
            return None  # someone put a block blob here: leave it alone
        if header and blob.download_blob(offset=0, length=len(header)).readall() != header:
            return None  # another header: rows of this one go to a sibling
        blocks = properties.append_blob_committed_block_count or 0
        if blocks >= self.max_blocks:
            return None
        return _OpenFile(name, part, properties.size, blocks)


def split_blocks(payload: bytes, limit: int) -> Iterator[bytes]:
    """Cut ``payload`` at row ends into blocks of at most ``limit`` bytes (a row is never split,
    so a rollover between two blocks never cuts a row in two)."""
    start = 0
    total = len(payload)
    while start < total:
        end = min(start + limit, total)
        if end < total:
            end = last_row_end(payload, start, end)
            if end < 0:
                raise SinkError(f"a single row is larger than the {limit}-byte block limit", permanent=True)
        yield payload[start:end]
        start = end


class _RedactSasSignature(logging.Filter):
    """urllib3 logs each request line, query string included, at DEBUG: a SAS signature must not
    reach an app's debug log that way (azure-core's own request log already redacts it)."""

    _SIGNATURE = re.compile(r"(?i)(sig=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "sig=" in message.lower():
            record.msg, record.args = self._SIGNATURE.sub(r"\1REDACTED", message), None
        return True


def _redact_sas_in_transport_logs() -> None:
    transport_logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactSasSignature) for f in transport_logger.filters):
        transport_logger.addFilter(_RedactSasSignature())


def _credential_problem(client: BlobServiceClient) -> str:
    """Why a client parsed from a connection string could never write, or "": no credential at all (Azure takes
    no anonymous writes), or an account key that is not base64, which the SDK finds only when it signs the
    first request (``AzureSigningError``), so every write failed."""
    key = getattr(client.credential, "account_key", None)
    if key is None:
        if client.credential is None and "?" not in client.primary_endpoint:
            return "has neither an AccountKey nor a SharedAccessSignature: Azure takes no anonymous writes"
        return ""
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return ("has an AccountKey that is not base64 (an account key is 88 characters of base64 ending in '=='): "
                "check that it was copied whole")
    return ""


def client_factory(settings: Settings) -> Callable[[], BlobServiceClient]:
    """How to build the service client from settings; credentials are checked here, at start-up."""
    if settings.storage_connection_string:
        connection_string = settings.storage_connection_string
        # Named as the operator set it: a ported Azure ML deployment sets Azure's name.
        variable = ("AML_MODEL_DC_STORAGE" if os.environ.get("AML_MODEL_DC_STORAGE") == connection_string
                    and os.environ.get("MDC_STORAGE_CONNECTION_STRING") != connection_string
                    else "MDC_STORAGE_CONNECTION_STRING")
        try:  # parsed here, without a request, so a malformed string fails at start-up
            client = BlobServiceClient.from_connection_string(connection_string, **_CLIENT_OPTIONS)
        except Exception as exc:  # the SDK's message may quote the string: only its type is shown
            raise ConfigError(f"{variable} is not a usable storage connection string "
                              f"({type(exc).__name__}); expected 'DefaultEndpointsProtocol=https;AccountName=…;"
                              "AccountKey=…;EndpointSuffix=core.windows.net'") from None
        problem = _credential_problem(client)
        client.close()
        if problem:
            raise ConfigError(f"{variable} {problem} (the string is not shown: it may hold a secret)")
        return lambda: BlobServiceClient.from_connection_string(connection_string, **_CLIENT_OPTIONS)
    url = settings.storage_account_url
    if settings.storage_sas_token or "?" in url:
        _redact_sas_in_transport_logs()
    if settings.storage_sas_token:
        sas = settings.storage_sas_token.lstrip("?")
        return lambda: BlobServiceClient(url, credential=sas, **_CLIENT_OPTIONS)
    if settings.storage_managed_identity:
        if not url.lower().startswith("https://"):
            raise ConfigError("MDC_STORAGE_ACCOUNT_URL must be https:// with a managed identity")
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise ConfigError("MDC_STORAGE_MANAGED_IDENTITY needs azure-identity: "
                              "pip install 'mdc-middleware[identity]'") from None
        credential = DefaultAzureCredential()
        return lambda: BlobServiceClient(url, credential=credential, **_CLIENT_OPTIONS)
    if "?" in url:  # a SAS inside the account URL
        return lambda: BlobServiceClient(url, **_CLIENT_OPTIONS)
    raise ConfigError("MDC_STORAGE_ACCOUNT_URL needs MDC_STORAGE_SAS_TOKEN or MDC_STORAGE_MANAGED_IDENTITY=true")
