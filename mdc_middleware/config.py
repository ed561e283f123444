"""One settings object, read from the environment first, keyword arguments overriding.

A container on AKS configures collection with environment variables only. Azure ML's own names are
accepted so an existing deployment keeps working; our own names carry the ``MDC_`` prefix. A bad value
fails at start-up with a message naming the variable, because a typo found at 3 a.m. by missing data
is far worse than a crash at deploy time.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .paths import as_component, validate_component
from .privacy import FieldRules, check_header_allowlist

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


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if not 0 < number < math.inf:  # NaN too
            raise ValueError(f"must be a finite number > 0, got {value!r}")
        return number

    return parse


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return number


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


# field name -> (environment variables, first match wins; parser of the variable's text)
_ENV: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "enabled": (("MDC_ENABLED", "AML_MODEL_DC_STORAGE_ENABLED"), _parse_bool),
    "debug": (("MDC_DEBUG", "AML_MODEL_DC_DEBUG"), _parse_bool),
    "boundary": (("MDC_BOUNDARY", "AML_MODEL_DC_BOUNDARY"), _parse_boundary),
    "storage_connection_string": (("MDC_STORAGE_CONNECTION_STRING", "AML_MODEL_DC_STORAGE"), _text),
    "storage_account_url": (("MDC_STORAGE_ACCOUNT_URL",), _text),
    "storage_sas_token": (("MDC_STORAGE_SAS_TOKEN",), _text),
    "storage_managed_identity": (("MDC_STORAGE_MANAGED_IDENTITY",), _parse_bool),
    "container": (("MDC_CONTAINER",), _text),
    "local_dir": (("MDC_LOCAL_DIR",), _text),
    "subscription_id": (("MDC_SUBSCRIPTION_ID",), _text),
    "resource_group": (("MDC_RESOURCE_GROUP",), _text),
    "workspace_name": (("MDC_WORKSPACE_NAME",), _text),
    "webservice_name": (("MDC_WEBSERVICE_NAME", "SERVICE_NAME"), _text),
    "model_name": (("MDC_MODEL_NAME",), _text),
    "model_version": (("MDC_MODEL_VERSION",), _text),
    "format": (("MDC_FORMAT",), lambda v: v.strip().lower()),
    "deployment_name": (("MDC_DEPLOYMENT_NAME",), _text),
    "routes": (("MDC_ROUTES",), parse_routes),
    "sample_rate": (("MDC_SAMPLE_RATE",), _fraction),
    "max_body_bytes": (("MDC_MAX_BODY_BYTES",), _positive(int)),
    "batch_rows": (("MDC_BATCH_ROWS",), _positive(int)),
    "batch_bytes": (("MDC_BATCH_BYTES",), _positive(int)),
    "flush_interval": (("MDC_FLUSH_INTERVAL_SECONDS",), _positive(float)),
    "queue_size": (("MDC_QUEUE_SIZE",), _positive(int)),
    "queue_max_bytes": (("MDC_QUEUE_MAX_BYTES",), _positive(int)),
    "spool_dir": (("MDC_SPOOL_DIR",), _text),
    "spool_max_bytes": (("MDC_SPOOL_MAX_BYTES",), _positive(int)),
    "spool_drop": (("MDC_SPOOL_DROP",), lambda v: v.strip().lower()),
    "encoder": (("MDC_ENCODER",), lambda v: v.strip().lower()),
    "file_per_writer": (("MDC_FILE_PER_WRITER",), _parse_bool),
    "spool_fsync": (("MDC_SPOOL_FSYNC",), _parse_bool),
    "metrics_path": (("MDC_METRICS_PATH",), _text),
    "shutdown_deadline": (("MDC_SHUTDOWN_DEADLINE_SECONDS",), _positive(float)),
    "retry_deadline": (("MDC_RETRY_DEADLINE_SECONDS",), _positive(float)),
    "request_id_header": (("MDC_REQUEST_ID_HEADER",), lambda v: v.strip().lower()),
    "echo_request_id": (("MDC_ECHO_REQUEST_ID",), _parse_bool),
    "neutralize_formulas": (("MDC_CSV_NEUTRALIZE_FORMULAS",), _parse_bool),
    "collect_status": (("MDC_COLLECT_STATUS",), _text),
    "collect_headers": (("MDC_COLLECT_HEADERS",), _names),
    "include_features": (("MDC_INCLUDE_FEATURES",), _allowlist),
    "exclude_features": (("MDC_EXCLUDE_FEATURES",), _names),
    "record_unparsed": (("MDC_RECORD_UNPARSED",), _parse_bool),
    "unparsed_max_bytes": (("MDC_UNPARSED_MAX_BYTES",), _positive(int)),
}

_SECRETS = ("storage_connection_string", "storage_sas_token")
_FLAGS = ("enabled", "debug", "storage_managed_identity", "echo_request_id", "neutralize_formulas", "record_unparsed",
          "file_per_writer",
          "spool_fsync")
_WHOLE_NUMBERS = ("max_body_bytes", "unparsed_max_bytes", "batch_rows", "batch_bytes", "queue_size", "queue_max_bytes",
                  "spool_max_bytes")
_SECONDS = ("flush_interval", "shutdown_deadline", "retry_deadline")
_NAME_LISTS = ("routes", "collect_headers", "include_features", "exclude_features")


@dataclass(frozen=True)
class Settings:
    """Everything collection needs to know; immutable once built."""

    enabled: bool = False
    debug: bool = False
    boundary: int = 1440
    # Storage: a connection string or an account URL selects Azure Blob Storage, else the local sink.
    storage_connection_string: str = field(default="", repr=False)
    storage_account_url: str = ""
    storage_sas_token: str = field(default="", repr=False)
    storage_managed_identity: bool = False
    container: str = "modeldata"
    local_dir: str = "mdc-data"
    # Identity of the data, i.e. the folders of the layout.
    subscription_id: str = "default"
    resource_group: str = "default"
    workspace_name: str = "default"
    webservice_name: str = "default"
    model_name: str = "default"
    model_version: str = "default"
    # How: Azure ML's ModelDataCollector CSV layout, or its current data collector's JSON Lines ("jsonl").
    format: str = "csv"
    deployment_name: str = ""    # with "jsonl": the deployment folder (default: the model name)
    # What the middleware captures.
    routes: tuple = ()
    sample_rate: float = 1.0
    max_body_bytes: int = 1 << 20
    collect_status: str = "2xx"
    request_id_header: str = "x-ms-request-id"
    echo_request_id: bool = True
    neutralize_formulas: bool = True
    collect_headers: tuple = ()          # request headers written as $mdc_header_<name>; credentials never
    include_features: Optional[tuple] = None   # only these features (globs, any case); None: all
    exclude_features: tuple = ()         # never these features, also inside JSON-valued cells
    record_unparsed: bool = False        # keep payloads that could not be parsed, raw, as designation "unparsed"
    unparsed_max_bytes: int = 4096       # of each such payload
    # The writer.
    batch_rows: int = 10_000
    batch_bytes: int = 4 << 20
    flush_interval: float = 5.0
    queue_size: int = 10_000
    queue_max_bytes: int = 256 << 20
    encoder: str = "thread"      # "process": parse and encode captured requests in a helper process
    file_per_writer: bool = False  # each process appends to files of its own (data-<host>-<pid>.csv): no contention
    spool_dir: str = ""          # "": ./mdc-spool with blob storage, none with the local sink; "off": none
    spool_max_bytes: int = 1 << 30
    spool_drop: str = "oldest"
    spool_fsync: bool = False
    metrics_path: str = ""       # e.g. /metrics: served by the middleware in Prometheus format
    shutdown_deadline: float = 25.0
    retry_deadline: float = 60.0

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("subscription_id", "resource_group", "workspace_name", "webservice_name",
                     "model_name", "model_version", "container"):
            object.__setattr__(self, name, as_component(getattr(self, name)))
            try:
                validate_component(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
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
                    value = _ENV[name][1](value)
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
        """Settings that share one sink (and so one writer thread) must have equal keys."""
        return (self.storage_connection_string, self.storage_account_url, self.storage_sas_token,
                self.storage_managed_identity, self.container, str(Path(self.local_dir).resolve()),
                self.batch_rows, self.batch_bytes, self.flush_interval, self.queue_size,
                self.queue_max_bytes, self.resolved_spool_dir, self.spool_max_bytes, self.spool_drop, self.spool_fsync,
                self.retry_deadline, self.neutralize_formulas, self.encoder, self.file_per_writer)

    @property
    def storage_endpoint(self) -> str:
        """The blob endpoint rows go to, without any secret (for logs); "" with the local sink."""
        if self.storage_account_url:
            return self.storage_account_url.split("?", 1)[0]
        if not self.storage_connection_string:
            return ""
        fields = dict(part.split("=", 1) for part in self.storage_connection_string.split(";") if "=" in part)
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
        """Defaults < Azure's model_config_map.json < environment < keyword arguments."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # field → the variable (and value) it was read from
        values.update(_read_model_config_map(config_map_path(environ)))
        for name, (variables, parse) in _ENV.items():
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
        try:
            return cls(**values)
        except ConfigError as exc:  # name the variable the bad value came from, as the operator wrote it
            field_name, _, detail = str(exc).partition(": ")
            if field_name in sources:
                raise ConfigError(f"{sources[field_name]}: {detail}") from None
            raise


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
