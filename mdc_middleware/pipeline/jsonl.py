"""Records → Azure ML's current data collector format (``MDC_FORMAT=jsonl``): one JSON object a line.

Azure ML's data collector for online endpoints (``azureml-ai-monitoring``) writes, under
``modelDataCollector/<endpoint>/<deployment>/<collection>/<yyyy>/<MM>/<dd>/<HH>/``, one CloudEvents-shaped record
per collected payload, which Azure ML model monitoring reads::

    {"specversion": "1.0", "id": "<uuid>", "source": "/mdc-middleware/<endpoint>/<deployment>",
     "type": "azureml.inference.model_inputs", "datacontenttype": "application/json",
     "time": "2026-12-06T21:43:02.123456Z", "data": [{"f1": 1.5, "f2": "a"}, ...],
     "correlationid": "<id>", "xrequestid": "<request id>", "modelversion": "1",
     "collectdatatype": "pandas.core.frame.DataFrame", "agent": "mdc-middleware/<version>",
     "contentrange": "bytes 0-41/42"}

``data`` holds the rows as records (``DataFrame.to_json(orient="records")``, what azureml-ai-monitoring sends);
values keep their JSON types: numbers stay numbers, text stays text (a zip code "00501" is not 501).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import uuid
from typing import Any, List, Optional

import numpy as np
import orjson

from .encoder import Encoded, with_rules
from ..metrics import Metrics
from ..storage.paths import COLLECTIONS, Target
from ..records.csv_encoding import _json_value
from ..records.record import Record, format_timestamp, unreserved
from ..records.snapshot import rows_as_lists

logger = logging.getLogger("mdc_middleware")

AGENT = "mdc-middleware/0.1.0"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def encode_record_jsonl(record: Record, metrics: Metrics, counted: bool) -> Optional[Encoded]:
    """One JSON line for the record, filed under its hour; None when it has no rows or was withheld (counted).

    ``counted``: as ``encoder.encode_record``'s (rows of a captured request are counted here).
    """
    ruled = with_rules(record, metrics)
    if ruled is None:
        return None
    record, columns = ruled
    try:
        names = unreserved(columns)  # a client's "$aml_…" key never passes for ours when read back
        rows = [dict(zip(names, (_value(v) for v in row))) for row in rows_as_lists(record.data, columns)]
        if not rows:
            return None
        data = orjson.dumps(rows, default=_json_value, option=_OPTIONS)
        target = record.target
        head = orjson.dumps({
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": _source(target),
            "type": f"azureml.inference.{COLLECTIONS.get(target.designation, target.designation)}",
            "datacontenttype": "application/json", "time": format_timestamp(record.timestamp)})
        tail = orjson.dumps({
            "correlationid": record.correlation_id, "xrequestid": record.request_id,
            "modelversion": target.model_version, "modelname": target.model_name,
            "collectdatatype": _data_type(record.data), "agent": AGENT,
            "contentrange": f"bytes 0-{len(data) - 1}/{len(data)}"})
        line = head[:-1] + b',"data":' + data + b"," + tail[1:] + b"\n"
    except Exception:
        logger.exception("mdc: could not encode rows for %s", record.target.model_name)
        metrics.add("internal_errors")
        metrics.drop("encode_error", record.rows or 1)
        return None
    if not counted:
        metrics.add("rows_captured", len(rows))
        metrics.add("rows_enqueued", len(rows))
    return Encoded(target, hour_folder(target, int(record.timestamp // 3600)), "", line, len(rows))


def _value(value: Any) -> Any:
    """NaN and infinities are not JSON: null, as pandas' to_json writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating) and not np.isfinite(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _data_type(data: Any) -> str:
    kind = type(data)
    if kind.__name__ == "FrameSnapshot":
        return "pandas.core.frame.DataFrame"
    return f"{kind.__module__}.{kind.__qualname__}".replace("builtins.", "python.")


@functools.lru_cache(maxsize=256)
def _source(target: Target) -> str:
    return f"/mdc-middleware/{target.webservice_name}/{target.deployment or target.model_name}"


@functools.lru_cache(maxsize=4096)
def hour_folder(target: Target, epoch_hour: int) -> str:
    """A target's folder for a UTC hour (hours since the epoch): formatted once per target and hour."""
    return target.hour_folder(dt.datetime(1970, 1, 1) + dt.timedelta(hours=epoch_hour))


def encode_records_jsonl(records: List[Record], metrics: Metrics) -> List[Encoded]:
    """Records found in captured requests, a line each."""
    out = []
    for record in records:
        encoded = encode_record_jsonl(record, metrics, counted=False)
        if encoded is not None:
            out.append(encoded)
    return out
