"""One settings object, read from the environment first, keyword arguments overriding.

A container on AKS configures collection with environment variables only. Azure ML's own names are
accepted so an existing deployment keeps working; our own names carry the ``MDC_`` prefix. A bad value
fails at start-up with a message naming the variable, and so does a misspelt ``MDC_*`` name, because a
typo found at 3 a.m. by missing data is far worse than a crash at deploy time.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Mapping, NamedTuple, Optional

from .storage.paths import as_component, container_name_problem, validate_component
from .payloads.privacy import FieldRules, check_header_allowlist

logger = logging.getLogger("mdc_middleware")

MODEL_CONFIG_MAP = "/var/azureml-app/model_config_map.json"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable or argument."""


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _parse_boundary(value: str) -> int:
    lowered = value.strip().lower()
    if lowered in ("day", "1440", ""):
        return 1440
    if lowered in ("hour", "60"):
        return 60
    raise ValueError(f"expected 'day' or 'hour', got {value!r}")


def _fraction(value: str) -> float:
    """A fraction from 0 to 1, or a percentage (``10%``)."""
    text = value.strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"expected a fraction from 0 to 1 (0.1, or 10%, for a tenth), got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"must be between 0 and 1 (or 0% and 100%), got {value!r}")
    return number


_QUANTITY = re.compile(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")
_BYTE_UNITS = {"": 1, "b": 1, **{prefix + suffix: factor
                                 for prefix, (decimal, binary) in {"k": (10**3, 1 << 10), "m": (10**6, 1 << 20),
                                                                   "g": (10**9, 1 << 30), "t": (10**12, 1 << 40)}.items()
                                 for suffix, factor in (("", decimal), ("b", decimal), ("i", binary), ("ib", binary))}}
_SECOND_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def _quantity(value: str, units: Mapping[str, float], expected: str) -> float:
    found = _QUANTITY.fullmatch(value)
    if found is None or found.group(2).lower() not in units:
        raise ValueError(f"expected {expected}, got {value!r}")
    number = float(found.group(1)) * units[found.group(2).lower()]
    if not 0 < number < math.inf:
        raise ValueError(f"must be a finite number more than 0, got {value!r}")
    return number


def _whole(value: str) -> int:
    """A whole number > 0: ``10000``, ``10_000``, ``1e4``."""
    number = _quantity(value, {"": 1}, "a whole number > 0 (10000)")
    if not number.is_integer():
        raise ValueError(f"expected a whole number > 0 (10000), got {value!r}")
    return int(number)


def _bytes(value: str) -> int:
    """A size in bytes, with a unit or without: ``1048576``, ``1MiB``, ``512Ki``, ``1GB`` (K, M, G, T are powers of
    1000, Ki, Mi, Gi, Ti of 1024, as Kubernetes reads them)."""
    return max(1, int(_quantity(value, _BYTE_UNITS, "a size in bytes (1048576, 1MiB, 512Ki, 1GB)")))


def _seconds(value: str) -> float:
    """Seconds, with a unit or without: ``5``, ``0.5``, ``500ms``, ``2m``."""
    return _quantity(value, _SECOND_UNITS, "a number of seconds (5, 0.5, 500ms, 2m)")


def parse_routes(value: str) -> tuple:
    """Route patterns separated by commas, as ``MDC_ROUTES`` (and a ``routes=`` keyword given as text) gives them."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _names(value: str) -> tuple:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


def _allowlist(value: str) -> Optional[tuple]:
    """Names, or None (every feature) when there are none (","): not an allowlist that allows nothing."""
    return _names(value) or None


def _text(value: str) -> str:
    return value.strip()


def setting(default: Any, env: tuple = (), parse: Optional[Callable[[str], Any]] = None, *, kind: str = "",
            doc: str = "", shown_default: Optional[str] = None, sink: bool = False, secret: bool = False) -> Any:
    """A field of ``Settings`` described once: the environment variables that set it (the first set wins), the
    parser of their text, its kind (``flag``, ``whole``, ``seconds``, ``names``: checked alike when given as a
    keyword), whether settings that differ in it need another writer (``sink``), whether it is a secret, and its
    line of the README's table (``doc``; ``shown_default`` when the default reads better in words)."""
    return field(default=default, repr=not secret, metadata={
        "env": env, "parse": parse or _text, "kind": kind, "doc": doc, "shown_default": shown_default,
        "sink": sink, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Everything collection needs to know; immutable once built."""

    enabled: bool = setting(False, ("MDC_ENABLED", "AML_MODEL_DC_STORAGE_ENABLED"), _parse_bool, kind="flag",
                            doc="collection is off unless this is true")
    debug: bool = setting(False, ("MDC_DEBUG", "AML_MODEL_DC_DEBUG"), _parse_bool, kind="flag",
                          doc="our log (`mdc_middleware` logger) at DEBUG on stderr")
    boundary: int = setting(1440, ("MDC_BOUNDARY", "AML_MODEL_DC_BOUNDARY"), _parse_boundary, shown_default="`day`",
                            doc="`$aml_dc_boundary` column: `day` (1440) or `hour` (60)")
    # Storage: a connection string or an account URL selects Azure Blob Storage, else the local sink.
    local_dir: str = setting("mdc-data", ("MDC_LOCAL_DIR",), sink=True,
                             doc="the local sink's directory, used when no storage is configured")
    container: str = setting("modeldata", ("MDC_CONTAINER",), sink=True,
                             doc="blob container (and first folder under the local directory)")
    storage_connection_string: str = setting("", ("MDC_STORAGE_CONNECTION_STRING", "AML_MODEL_DC_STORAGE"),
                                             sink=True, secret=True,
                                             doc="Azure Storage connection string: selects blob storage")
    storage_account_url: str = setting("", ("MDC_STORAGE_ACCOUNT_URL",), sink=True,
                                       doc="account URL (with `MDC_STORAGE_SAS_TOKEN` or managed identity)")
    storage_sas_token: str = setting("", ("MDC_STORAGE_SAS_TOKEN",), sink=True, secret=True,
                                     doc="SAS token for the account URL")
    storage_managed_identity: bool = setting(False, ("MDC_STORAGE_MANAGED_IDENTITY",), _parse_bool, kind="flag",
                                             sink=True,
                                             doc="authenticate with azure-identity's `DefaultAzureCredential`")
    # Identity of the data, i.e. the folders of the layout.
    subscription_id: str = setting("default", ("MDC_SUBSCRIPTION_ID",),
                                   doc="subscription folder (or all three at once: `MDC_WORKSPACE`)")
    resource_group: str = setting("default", ("MDC_RESOURCE_GROUP",), doc="resource group folder")
    workspace_name: str = setting("default", ("MDC_WORKSPACE_NAME",), doc="workspace folder")
    webservice_name: str = setting("default", ("MDC_WEBSERVICE_NAME", "SERVICE_NAME"),
                                   doc="web service folder and `$aml_service_name`")
    model_name: str = setting("default", ("MDC_MODEL_NAME",),
                              doc="model of middleware rows (a route's `Schema` may say another)")
    model_version: str = setting("default", ("MDC_MODEL_VERSION",), doc="its version")
    # How: Azure ML's ModelDataCollector CSV layout, or its current data collector's JSON Lines ("jsonl").
    format: str = setting("csv", ("MDC_FORMAT",), lambda v: v.strip().lower(),
                          doc="`csv`: Azure ML `ModelDataCollector`'s layout; `jsonl`: its current data "
                              "collector's (above)")
    deployment_name: str = setting("", ("MDC_DEPLOYMENT_NAME",), shown_default="the model name",
                                   doc="with `jsonl`: the deployment folder")
    # What the middleware captures.
    routes: tuple = setting((), ("MDC_ROUTES",), parse_routes, kind="names", shown_default="every POST",
                            doc="comma-separated paths, globs or placeholder paths to capture "
                                "(`/score,/v1/*/predict,/models/{model}/predict`), as the app routes them: below a "
                                "`Mount` or uvicorn's `--root-path` (the path with that prefix matches too)")
    sample_rate: float = setting(1.0, ("MDC_SAMPLE_RATE",), _fraction, shown_default="`1.0`", doc="fraction of matching requests captured")
    max_body_bytes: int = setting(1 << 20, ("MDC_MAX_BODY_BYTES",), _bytes, kind="whole",
                                  doc="bodies above this are passed to the app whole but not collected (counted)")
    collect_status: str = setting("2xx", ("MDC_COLLECT_STATUS",),
                                  doc="`2xx`: only successful responses are collected; `all`")
    request_id_header: str = setting("x-ms-request-id", ("MDC_REQUEST_ID_HEADER",), lambda v: v.strip().lower(),
                                     doc="response header carrying the request id (empty: none)")
    echo_request_id: bool = setting(True, ("MDC_ECHO_REQUEST_ID",), _parse_bool, kind="flag",
                                    doc="add that header when the app set none")
    neutralize_formulas: bool = setting(True, ("MDC_CSV_NEUTRALIZE_FORMULAS",), _parse_bool, kind="flag", sink=True,
                                        doc="neutralise spreadsheet formulas in text cells")
    include_features: Optional[tuple] = setting(None, ("MDC_INCLUDE_FEATURES",), _allowlist, kind="names",
                                                shown_default="all", doc="only these features are written (names or "
                                                "globs, any case; empty: all)")
    exclude_features: tuple = setting((), ("MDC_EXCLUDE_FEATURES",), _names, kind="names",
                                      doc="these features are never written, not even inside JSON-valued cells")
    collect_headers: tuple = setting((), ("MDC_COLLECT_HEADERS",), _names, kind="names", shown_default="none",
                                     doc="request headers written as `$mdc_header_<name>` columns; credentials "
                                         "refused")
    record_unparsed: bool = setting(False, ("MDC_RECORD_UNPARSED",), _parse_bool, kind="flag",
                                    doc="keep payloads no schema could read, raw, in designation `unparsed`")
    unparsed_max_bytes: int = setting(4096, ("MDC_UNPARSED_MAX_BYTES",), _bytes, kind="whole",
                                      doc="how much of each such payload is kept")
    # The writer.
    batch_rows: int = setting(10_000, ("MDC_BATCH_ROWS",), _whole, kind="whole", sink=True,
                              doc="a batch is written when it holds this many rows…")
    batch_bytes: int = setting(4 << 20, ("MDC_BATCH_BYTES",), _bytes, kind="whole", sink=True,
                               doc="…or this many bytes…")
    flush_interval: float = setting(5.0, ("MDC_FLUSH_INTERVAL_SECONDS",), _seconds, kind="seconds",
                                    sink=True, doc="…or its oldest row is this old")
    queue_size: int = setting(10_000, ("MDC_QUEUE_SIZE",), _whole, kind="whole", sink=True,
                              doc="queued `collect()` calls / requests; beyond it rows are dropped and counted")
    queue_max_bytes: int = setting(256 << 20, ("MDC_QUEUE_MAX_BYTES",), _bytes, kind="whole", sink=True,
                                   doc="bound on the bytes held by the queue and pending batches")
    file_per_writer: bool = setting(False, ("MDC_FILE_PER_WRITER",), _parse_bool, kind="flag", sink=True,
                                    doc="each process appends to files of its own, `data-<host>-<pid>.csv`: "
                                        "replicas never contend (see Azure Blob Storage)")
    encoder: str = setting("thread", ("MDC_ENCODER",), lambda v: v.strip().lower(), sink=True,
                           doc="where captured requests are parsed and written as CSV: `thread` (the writer's "
                               "batcher thread) or `process` (a helper process per server process, off the "
                               "server's GIL; see Benchmarks)")
    shutdown_deadline: float = setting(25.0, ("MDC_SHUTDOWN_DEADLINE_SECONDS",), _seconds, kind="seconds",
                                       doc="flush deadline at shutdown (AKS gives 30 s)")
    retry_deadline: float = setting(60.0, ("MDC_RETRY_DEADLINE_SECONDS",), _seconds, kind="seconds",
                                    sink=True, doc="how long one batch is retried before it waits for the next round")
    spool_dir: str = setting("", ("MDC_SPOOL_DIR",), sink=True, shown_default="`./mdc-spool` with blob storage",
                             doc="the write-ahead journal and where undeliverable batches wait (`off`: neither)")
    spool_max_bytes: int = setting(1 << 30, ("MDC_SPOOL_MAX_BYTES",), _bytes, kind="whole", sink=True,
                                   doc="spool size bound; past it rows are dropped by policy and counted")
    spool_drop: str = setting("oldest", ("MDC_SPOOL_DROP",), lambda v: v.strip().lower(), sink=True,
                              doc="which rows a full spool drops: `oldest` or `newest`")
    spool_fsync: bool = setting(False, ("MDC_SPOOL_FSYNC",), _parse_bool, kind="flag", sink=True,
                                doc="fsync each journal write and spool record (survives a machine crash, not only "
                                    "a process crash)")
    metrics_path: str = setting("", ("MDC_METRICS_PATH",), doc="e.g. `/metrics`: the middleware serves Prometheus "
                                                               "metrics there, on the app's port")

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("subscription_id", "resource_group", "workspace_name", "webservice_name",
                     "model_name", "model_version", "container"):
            object.__setattr__(self, name, as_component(getattr(self, name)))
            try:
                validate_component(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if self.uses_blob_storage:
            problem = container_name_problem(self.container)
            if problem:
                raise ConfigError(f"container: {problem}")
        if self.boundary not in (60, 1440):
            raise ConfigError(f"boundary: must be 60 or 1440, got {self.boundary!r}")
        if self.collect_status not in ("2xx", "all"):
            raise ConfigError(f"collect_status: expected '2xx' or 'all', got {self.collect_status!r}")
        if self.spool_drop not in ("oldest", "newest"):
            raise ConfigError(f"spool_drop: expected 'oldest' or 'newest', got {self.spool_drop!r}")
        if self.format not in ("csv", "jsonl"):
            raise ConfigError(f"format: expected 'csv' or 'jsonl', got {self.format!r}")
        if self.deployment_name:
            try:
                validate_component(self.deployment_name)
            except ValueError as exc:
                raise ConfigError(f"deployment_name: {exc}") from None
        if self.encoder not in ("thread", "process"):
            raise ConfigError(f"encoder: expected 'thread' or 'process', got {self.encoder!r}")
        if self.metrics_path and not self.metrics_path.startswith("/"):
            raise ConfigError(f"metrics_path: must start with '/', got {self.metrics_path!r}")
        try:
            object.__setattr__(self, "collect_headers", check_header_allowlist(self.collect_headers))
        except ValueError as exc:
            raise ConfigError(f"collect_headers: {exc}") from None

    def _check_types(self) -> None:
        """Keyword arguments get the checks environment variables get. A value given as text is read as
        its variable would be (``enabled="false"`` is off, ``routes="/a,/b"`` two routes); anything else
        of the wrong kind fails here, not on the writer thread: ``flush_interval=0`` (or NaN) made the
        batcher spin on a core, ``routes="/score"`` was six one-letter routes that matched nothing."""
        for name in (*_FLAGS, *_WHOLE_NUMBERS, *_SECONDS, *_NAME_LISTS, "sample_rate", "boundary"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = _FIELDS[name].metadata["parse"](value)
                except ValueError as exc:
                    raise ConfigError(f"{name}={value!r}: {exc}") from None
            elif name in _NAME_LISTS and isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        for name in _WHOLE_NUMBERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ConfigError(f"{name}: expected a whole number > 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _SECONDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
                raise ConfigError(f"{name}: expected a finite number of seconds > 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        value = self.sample_rate
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"sample_rate: must be between 0 and 1, got {value!r}")
        object.__setattr__(self, "sample_rate", float(value))
        for name in _NAME_LISTS:
            value = getattr(self, name)
            if not (isinstance(value, tuple) or (value is None and name == "include_features")):
                raise ConfigError(f"{name}: expected a list of names, got {value!r}")

    @property
    def workspace(self) -> str:
        """Azure's `<subscriptionid>/<resourcegroup>/<workspace>` form."""
        return f"{self.subscription_id}/{self.resource_group}/{self.workspace_name}"

    @property
    def field_rules(self) -> FieldRules:
        """The feature allowlist and denylist every collector and route of these settings obeys."""
        return FieldRules(include=self.include_features, exclude=self.exclude_features)

    @property
    def uses_blob_storage(self) -> bool:
        return bool(self.storage_connection_string or self.storage_account_url)

    def sink_key(self) -> tuple:
        """Settings that share one sink (and so one writer thread) must have equal keys: the ``sink`` fields,
        folders as the absolute paths they resolve to."""
        resolved = {"local_dir": str(Path(self.local_dir).resolve()), "spool_dir": self.resolved_spool_dir}
        return tuple(resolved.get(name, getattr(self, name)) for name in _SINK)

    @property
    def storage_endpoint(self) -> str:
        """The blob endpoint rows go to, without any secret (for logs); "" with the local sink."""
        if self.storage_account_url:
            return self.storage_account_url.split("?", 1)[0]
        if not self.storage_connection_string:
            return ""
        fields = dict(part.split("=", 1) for part in self.storage_connection_string.split(";") if "=" in part)
        if fields.get("UseDevelopmentStorage", "").lower() == "true":  # the emulator's short form (Azurite)
            return "http://127.0.0.1:10000/devstoreaccount1"
        if fields.get("BlobEndpoint"):
            return fields["BlobEndpoint"]
        protocol = fields.get("DefaultEndpointsProtocol", "https")
        return f"{protocol}://{fields.get('AccountName', '?')}.blob.{fields.get('EndpointSuffix', 'core.windows.net')}"

    @property
    def resolved_spool_dir(self) -> str:
        """Where undeliverable batches wait; "" when there is no spool."""
        if self.spool_dir.lower() == "off":
            return ""
        if self.spool_dir:
            return str(Path(self.spool_dir).resolve())
        return str(Path("mdc-spool").resolve()) if self.uses_blob_storage else ""

    def __repr__(self) -> str:  # secrets never reach a log, even through a repr
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS:
                value = "***" if value else ""
            elif f.name == "storage_account_url":
                value = value.split("?", 1)[0]
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls, settings: Optional["Settings"], **overrides: Any) -> "Settings":
        """The given settings with overrides applied, or settings read from the environment."""
        if settings is None:
            return cls.from_env(**overrides)
        return settings.replace(**overrides) if overrides else settings

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "Settings":
        """Defaults < Azure's model_config_map.json < environment < keyword arguments.

        :raises ConfigError: a value is invalid, or an ``MDC_*`` variable is a misspelling of one we read
            (``MDC_ROUTS``); the message names the variable."""
        environ = os.environ if environ is None else environ
        _refuse_misspelt_variables(environ)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # field → the variable (and value) it was read from
        values.update(_read_model_config_map(config_map_path(environ)))
        for name, (variables, parse) in ENVIRONMENT.items():
            for variable in variables:
                raw = environ.get(variable)
                if raw is None or (not raw.strip() and name != "request_id_header"):
                    # Set to nothing (an empty Helm value) is not set: MDC_CSV_NEUTRALIZE_FORMULAS="" turned
                    # formula neutralising off, and a number failed. An empty MDC_REQUEST_ID_HEADER means no header.
                    continue
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    shown = "***" if name in _SECRETS else raw
                    raise ConfigError(f"{variable}={shown!r}: {exc}") from None
                sources[name] = f"{variable}={'***' if name in _SECRETS else raw!r}"
                break
        workspace = environ.get("MDC_WORKSPACE")
        if workspace:
            values.update(_split_workspace(workspace, "MDC_WORKSPACE"))
        known = {f.name for f in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
                sources.pop(name, None)
        if (sources.get("enabled", "").startswith("AML_MODEL_DC_STORAGE_ENABLED=") and values.get("enabled")
                and not values.get("storage_connection_string") and not values.get("storage_account_url")
                and "local_dir" not in values):
            # Azure's switch asks for Azure storage (its collector refused to collect without it): rows must not
            # go, unannounced but for a log line, into a folder of the container's own disk.
            raise ConfigError("AML_MODEL_DC_STORAGE_ENABLED is true but no storage is set: set AML_MODEL_DC_STORAGE "
                              "(or MDC_STORAGE_CONNECTION_STRING, MDC_STORAGE_ACCOUNT_URL) to write to Azure Blob "
                              "Storage, or MDC_LOCAL_DIR to write to a local folder")
        try:
            return cls(**values)
        except ConfigError as exc:  # name the variable the bad value came from, as the operator wrote it
            field_name, _, detail = str(exc).partition(": ")
            if field_name in sources:
                raise ConfigError(f"{sources[field_name]}: {detail}") from None
            raise


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# field → (its environment variables, first set wins; the parser of their text)
ENVIRONMENT: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    name: (f.metadata["env"], f.metadata["parse"]) for name, f in _FIELDS.items() if f.metadata.get("env")}
_SECRETS = tuple(name for name, f in _FIELDS.items() if f.metadata.get("secret"))
_SINK = tuple(name for name, f in _FIELDS.items() if f.metadata.get("sink"))
_FLAGS, _WHOLE_NUMBERS, _SECONDS, _NAME_LISTS = (
    tuple(name for name, f in _FIELDS.items() if f.metadata.get("kind") == kind)
    for kind in ("flag", "whole", "seconds", "names"))

# Variables read elsewhere than into a field, for the README's table.
OTHER_VARIABLES = (
    ("MDC_WORKSPACE", "", "`<subscription>/<resourcegroup>/<workspace>` in one variable"),
    ("MDC_MODEL_CONFIG_MAP", "`/var/azureml-app/model_config_map.json`", "Azure's deployment file read for the "
     "workspace identity and model versions"),
    ("MDC_SIGTERM_FLUSH", "`true`", "flush on SIGTERM where nothing else in the process handles it (read at "
     "import)"),
)

# Set for the test command (scripts/test.sh, tests/azurite.py): ours, but not a setting.
_TOOLING_VARIABLES = ("MDC_AZURITE_BIN",)
# Every variable read, by name.
KNOWN_VARIABLES = frozenset([*(variable for variables, _ in ENVIRONMENT.values() for variable in variables),
                             *(variable for variable, _, _ in OTHER_VARIABLES), *_TOOLING_VARIABLES])
# A variable named like these that nothing reads is misspelt or left over. Azure's own names are only warned of
# (``startup``): Azure's platform may set some that we do not read.
_OUR_PREFIX = "MDC_"
_AZURE_PREFIX = "AML_MODEL_DC_"
# What Kubernetes sets in every pod for each Service of the namespace (for a Service named "mdc", the name, then
# _SERVICE_HOST, _PORT_80_TCP_ADDR…): not ours, never a typo.
_KUBERNETES_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
                                      r"|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)")


class StrayVariable(NamedTuple):
    """A variable named like ours that nothing reads."""

    name: str
    meant: Optional[str]  # the variable it is most likely a misspelling of, if one is close

    @property
    def refused(self) -> bool:
        """A misspelt ``MDC_*`` name: start-up fails. Azure's names and names close to none are warned of."""
        return self.meant is not None and self.name.upper().startswith(_OUR_PREFIX)


def stray_variables(environ: Mapping[str, str]) -> List[StrayVariable]:
    """Variables named like ours (``MDC_*``, ``AML_MODEL_DC_*``, in any case) that nothing reads, sorted."""
    found = []
    for name in environ:
        upper = name.upper()
        if (upper.startswith((_OUR_PREFIX, _AZURE_PREFIX)) and name not in KNOWN_VARIABLES
                and not _KUBERNETES_SERVICE_LINK.fullmatch(name)):
            close = [upper] if upper in KNOWN_VARIABLES else difflib.get_close_matches(upper, KNOWN_VARIABLES, 1, 0.8)
            found.append(StrayVariable(name, close[0] if close else None))
    return sorted(found)


def _refuse_misspelt_variables(environ: Mapping[str, str]) -> None:
    """A misspelt ``MDC_*`` variable fails start-up: MDC_SPOOL_DRI=/data would otherwise run without the journal
    it asked for, and nothing would say so until rows were missing. The value is never shown (it may be a
    secret)."""
    for stray in stray_variables(environ):
        if stray.refused:
            raise ConfigError(f"{stray.name} is set, but mdc-middleware reads no variable of that name: did you "
                              f"mean {stray.meant}? Rename it (or remove it)")


def settings_table() -> str:
    """The README's table of variables, made from the fields' descriptions (``tests/test_config.py`` checks that
    the README holds it as made)."""
    rows = [(" / ".join(f"`{v}`" for v in f.metadata["env"]), f.metadata["shown_default"] or _shown(f.default),
             f.metadata["doc"]) for f in _FIELDS.values()]
    rows += [(f"`{variable}`", default, doc) for variable, default, doc in OTHER_VARIABLES]
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [("| " + " | ".join(cells) + " |").replace("|  |", "| |") for cells in rows]
    return "\n".join(lines)


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default in ("", (), None):
        return ""
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def check_writable_directory(path: str, setting: str) -> None:
    """Fail at start-up, naming the setting, when nothing could ever be written under ``path`` (a file in
    the way, a read-only volume), rather than at the first flush, on the writer thread, in the log. Creates
    nothing: the folder appears with the first rows."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        problem = f"{str(probe)!r} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"{str(probe)!r} is not writable"
    else:
        return
    raise ConfigError(f"{setting}={path!r}: {problem}; point it at a writable volume (an emptyDir on AKS)")


def _split_workspace(workspace: str, source: str) -> dict[str, str]:
    parts = workspace.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"{source}={workspace!r}: expected '<subscriptionid>/<resourcegroup>/<workspace>'")
    return dict(zip(("subscription_id", "resource_group", "workspace_name"), parts))


def _load_model_config_map(path: str) -> dict:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def config_map_path(environ: Optional[Mapping[str, str]] = None) -> str:
    return (os.environ if environ is None else environ).get("MDC_MODEL_CONFIG_MAP", MODEL_CONFIG_MAP)


def model_version_in_config_map(model_name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The highest version of ``model_name`` in the config map's ``modelsInfo``, as azureml-monitoring takes it
    for a collector made without a version; None when the map does not list the model."""
    document = _load_model_config_map(config_map_path(environ))
    models = document.get("modelsInfo")
    versions = models.get(model_name) if isinstance(models, dict) else None
    if not isinstance(versions, dict) or not versions:
        return None
    numbered = [v for v in versions if str(v).isdigit()]
    version = max(numbered, key=int) if numbered else sorted(versions)[-1]
    details = versions.get(version)
    if isinstance(details, dict) and details.get("dataCollectorStoragePath"):
        logger.info("mdc: model_config_map.json gives model %s a dataCollectorStoragePath; rows go to the "
                    "modeldata/ layout of MDC_CONTAINER as usual", model_name)
    logger.info("mdc: model %s has no version given; using %s, its highest in model_config_map.json's modelsInfo "
                "(as azureml-monitoring does)", model_name, version)
    return str(version)


def _read_model_config_map(path: str) -> dict[str, str]:
    """Azure ML's deployment writes the workspace identity here; pick up what is present.

    The account's subscription, resource group and workspace are lower-cased, as azureml-monitoring writes
    them into the path (blob names are case-sensitive: a reader's path must match to the letter).
    """
    document = _load_model_config_map(path)
    found: dict[str, str] = {}
    scopes = [document] + [v for v in document.values() if isinstance(v, dict)]
    aliases = {
        "subscription_id": ("subscriptionId", "subscription_id"),
        "resource_group": ("resourceGroupName", "resourceGroup", "resource_group"),
        "workspace_name": ("workspaceName", "accountName", "workspace_name"),
        "webservice_name": ("serviceName", "webserviceName", "service_name"),
    }
    for name, keys in aliases.items():
        for scope in scopes:
            value = next((scope[k] for k in keys if isinstance(scope.get(k), str) and scope[k]), None)
            if value:
                found[name] = value.lower() if name in _LOWER_CASED_BY_AZURE else value
                break
    return found


_LOWER_CASED_BY_AZURE = ("subscription_id", "resource_group", "workspace_name")
