"""A drop-in for ``azureml.monitoring.ModelDataCollector``: same constructor, same ``collect()``.

An Azure ML ``score.py`` changes only its import line. ``collect()`` snapshots the data, puts one
record on the queue and returns at once; the CSV is written by the background writer.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from . import runtime, startup
from .payloads.captured_request import new_correlation_id, warn_once
from .config import ConfigError, Settings, model_version_in_config_map
from .storage.paths import Target, designation_meant
from .payloads.privacy import FieldRules, Redactor
from .records.record import BOUNDARY, CORRELATION_ID, SCORING_TIMESTAMP, Record, format_timestamp
from .records.snapshot import (FrameSnapshot, count_rows, default_prefix, infer_columns, is_frame, numeric_only, snapshot, uncollectable)
from .served_request import served_request_context
from .pipeline.writer import Writer

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("mdc_middleware")

REQUEST_ID = "$aml_request_id"
_CORRELATION_COLUMNS = (CORRELATION_ID, SCORING_TIMESTAMP, BOUNDARY, REQUEST_ID)
_DEFAULT_WORKSPACE = "default/default/default"


class ModelDataCollector:
    """Collects rows of one designation (``inputs``, ``predictions``, …) of one model."""

    def __init__(self, model_name: str, designation: str = "default", feature_names: Optional[Sequence[str]] = None,
                 workspace: str = _DEFAULT_WORKSPACE, webservice_name: str = "default",
                 model_version: Union[str, int] = "default", collection_name: str = "default", *,
                 settings: Optional[Settings] = None, writer: Optional[Writer] = None,
                 include_features: Optional[Sequence[str]] = None, exclude_features: Sequence[str] = (),
                 redact: Optional[Mapping[str, Redactor]] = None) -> None:
        """Azure ML's ``azureml.monitoring.ModelDataCollector`` arguments, with the same meaning and defaults:

        :param model_name: the model's folder under the service's.
        :param designation: ``inputs``, ``predictions``, …; ``"default"`` files under ``general/`` as Azure's did.
        :param feature_names: the column names of the rows ``collect()`` is given; by default taken from the
            data (DataFrame columns, record keys) or ``feature_<i>``.
        :param workspace: ``<subscriptionid>/<resourcegroup>/<workspace>``; by default from the settings.
        :param webservice_name, model_version, collection_name: as Azure's; a default version comes from
            ``MDC_MODEL_VERSION`` or Azure ML's model config map.

        And beyond Azure's:

        :param settings: by default ``Settings.from_env()``.
        :param writer: a writer to share; by default the process's writer for these settings.
        :param include_features, exclude_features: names or globs of the columns that may, or may not, be written.
        :param redact: name → function of the value, for personal data that must never be written as given.
        :raises ConfigError: an argument or setting is invalid (a bad workspace, a name that cannot be a folder).
        """
        self.settings = settings or Settings.from_env()
        try:
            rules = self.settings.field_rules.merged(
                FieldRules(include=include_features, exclude=tuple(exclude_features), redact=redact or {}))
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        self.rules: Optional[FieldRules] = rules if rules.active else None
        # Explicit arguments win; Azure's defaults give way to what the deployment configured.
        parts = (workspace.split("/") if workspace != _DEFAULT_WORKSPACE
                 else [self.settings.subscription_id, self.settings.resource_group, self.settings.workspace_name])
        if len(parts) != 3:
            raise ConfigError(f"workspace: expected '<subscriptionid>/<resourcegroup>/<workspace>', got {workspace!r}")
        if designation == "default":  # azureml-monitoring files a collector made without one under general/
            designation = "general"
        stem = collection_name if designation in ("signals", "general") and collection_name != "default" else "data"
        if model_version == "default":
            model_version = self.settings.model_version
            if model_version == "default":
                model_version = model_version_in_config_map(model_name) or model_version
        try:
            self.target = Target(
                subscription_id=parts[0], resource_group=parts[1], workspace_name=parts[2],
                webservice_name=webservice_name if webservice_name != "default" else self.settings.webservice_name,
                model_name=model_name, model_version=model_version, designation=designation, file_stem=stem,
                layout=self.settings.format, deployment=self.settings.deployment_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if isinstance(feature_names, str):
            raise ConfigError("feature_names: expected a list of names, got a string")
        self.feature_names = tuple(str(n) for n in feature_names) if feature_names is not None else None
        self.model_name = model_name
        self.designation = designation
        self.collection_name = collection_name
        self._writer_handle = runtime.WriterHandle(self.settings, writer)  # storage settings fail here, at start-up
        startup.announce(self.settings)
        meant = designation_meant(designation)
        if meant is not None and self.settings.enabled:
            startup.warn_once(("designation", designation),
                              f"mdc: ModelDataCollector({model_name!r}, designation={designation!r}): rows are filed "
                              f"under designation {designation!r} (a folder of that name), not {meant!r}, where the "
                              f"readers look for {meant}; did you mean {meant!r}?")

    def __repr__(self) -> str:
        return (f"ModelDataCollector(model_name={self.model_name!r}, designation={self.designation!r}, "
                f"enabled={self.enabled})")

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def writer(self) -> Writer:
        return self._writer_handle.writer

    def collect(self, input_data: Any, user_correlation_id: str = "") -> Dict[str, Any]:
        """Queue ``input_data`` (list, numpy array or DataFrame) and return its correlation values.

        Never raises for bad data: a value that cannot be collected is logged and counted, and the
        scoring code goes on.
        """
        context = runtime.current_request.get() or served_request_context()
        now = time.time()
        correlation_id = context.correlation_id if context else new_correlation_id()
        if user_correlation_id:
            correlation_id = f"{user_correlation_id}-{correlation_id}"
        request_id = context.request_id if context else ""
        data = input_data
        if (is_frame(data) and len(data) and not numeric_only(data)
                and CORRELATION_ID in data.columns):  # (a look-up of 15 µs in a new frame: done when needed)
            # Rows prepared by add_correlations(): reuse their ids so they join with the first collect.
            first = data.iloc[0]
            correlation_id = str(first[CORRELATION_ID])
            request_id = str(first.get(REQUEST_ID, request_id) or request_id)
            data = data.drop(columns=[c for c in _CORRELATION_COLUMNS if c in data.columns])
        correlations = {
            CORRELATION_ID: correlation_id,
            SCORING_TIMESTAMP: format_timestamp(now),
            BOUNDARY: self.settings.boundary,
            REQUEST_ID: request_id,
        }
        if not self.settings.enabled:
            return correlations
        try:
            reason = uncollectable(data)
            if reason is not None:
                self.writer.metrics.skip(f"collect:{reason}")
                warn_once(("collect", self.model_name, reason), "mdc: collect() for model %s was given an %s, "
                          "which cannot be read without using it up; pass a list (logged once)", self.model_name, reason)
                return correlations
            copied = snapshot(data)
            rows = count_rows(copied, self.feature_names)
            columns = self.feature_names  # None: the writer thread takes them from the data
            record = Record(target=self.target, data=copied, columns=columns, correlation_id=correlation_id,
                            timestamp=now, request_id=request_id, boundary=self.settings.boundary, rows=rows,
                            rules=self.rules)
            writer = self.writer
            writer.metrics.add("rows_captured", rows)
            writer.submit(record, rows=rows, nbytes=_approx_bytes(copied))
        except Exception:  # collection must never break scoring
            logger.exception("mdc: collect() failed for model %s", self.model_name)
            try:
                self.writer.metrics.add("internal_errors")
            except Exception:
                pass
        return correlations

    def add_correlations(self, input_data: Any, correlations: Dict[str, Any]) -> pd.DataFrame:
        """``input_data`` as a DataFrame with the correlation columns of an earlier collect().

        Collecting the result reuses those ids, so (for example) labels or predictions join with
        the inputs they belong to.
        """
        import pandas as pd  # here: a process that only collects arrays and lists need not load it

        if isinstance(input_data, pd.DataFrame):
            frame = input_data.copy()
        else:
            array = np.asarray(input_data, dtype=object)
            if array.ndim == 0:
                array = array.reshape(1, 1)
            elif array.ndim == 1:
                array = array.reshape(-1, 1)
            else:
                array = array.reshape(len(array), -1)
            if self.feature_names and len(self.feature_names) == array.shape[1]:
                names = list(self.feature_names)
            else:
                names = list(infer_columns(array, default_prefix(self.designation)))
            frame = pd.DataFrame(array, columns=names)
        for name in _CORRELATION_COLUMNS:
            if name in correlations:
                frame[name] = correlations[name]
        return frame


def _approx_bytes(data: Any) -> int:
    if type(data) is FrameSnapshot:
        return int(data.block.values.nbytes) + 256
    if isinstance(data, np.ndarray):
        return int(data.nbytes) + 256
    if is_frame(data):  # an estimate: memory_usage() costs more than the whole collect()
        rows, columns = data.shape
        return rows * columns * 16 + 256
    if isinstance(data, list):
        return 64 * (len(data) + 1) * (len(data[0]) if data and isinstance(data[0], list) else 1)
    return 256
