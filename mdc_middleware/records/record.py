"""A ``Record``: what one ``collect()`` call or one captured payload leaves in the queue (a snapshot of the
data and the metadata all its rows share), and the correlation columns Azure ML's files carry."""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple


from ..storage.paths import Target
from ..payloads.privacy import FieldRules
from .snapshot import rows_as_lists


CORRELATION_ID = "$aml_dc_correlation_id"
SCORING_TIMESTAMP = "$aml_dc_scoring_timestamp"
BOUNDARY = "$aml_dc_boundary"
META_COLUMNS: Tuple[str, ...] = (
    CORRELATION_ID, SCORING_TIMESTAMP, BOUNDARY, "$aml_workspace", "$aml_service_name",
    "$aml_model_name", "$aml_model_version", "$aml_request_id",
)
# Column names the readers take as ours. A payload or collect() column named like them (a client sending
# {"$aml_dc_correlation_id": "forged"}) is written under "_" + its name: a header never holds a name twice, and
# no reader joins on a value a client chose. ($mdc_header_* columns are the middleware's, from MDC_COLLECT_HEADERS.)
RESERVED_PREFIXES = ("$aml_", "$mdc_")
OURS = "$mdc_header_"


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIXES) and not name.startswith(OURS)


def unreserved(columns: Sequence[str]) -> Tuple[str, ...]:
    """The names as written in a header: reserved ones prefixed with "_" until they are neither reserved nor
    taken by another column."""
    if not any(is_reserved(name) for name in columns):
        return tuple(columns)
    taken = set(columns) | set(META_COLUMNS)
    out = []
    for name in columns:
        if is_reserved(name):
            renamed = "_" + name
            while renamed in taken:
                renamed = "_" + renamed
            taken.add(renamed)
            name = renamed
        out.append(name)
    return tuple(out)


_second_prefix: Tuple[int, str] = (-1, "")


def format_timestamp(epoch_seconds: float) -> str:
    """UTC ISO-8601 with microseconds, e.g. ``2026-11-25T08:15:02.123456Z``.

    On the request path for every collect(): the text up to the second is formatted once a second.
    """
    global _second_prefix
    micros = math.floor(epoch_seconds * 1_000_000)  # truncated: never into the next second, or day
    second, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _second_prefix
    if cached_second != second:
        prefix = dt.datetime.fromtimestamp(second, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_prefix = (second, prefix)
    return f"{prefix}{fraction:06d}Z"


@dataclass
class Record:
    """One collect() call: rows for one target that share correlation metadata."""

    target: Target
    data: Any                     # list of rows, 1-D/2-D ndarray, DataFrame or FrameSnapshot (a snapshot)
    columns: Optional[Tuple[str, ...]]
    correlation_id: str
    timestamp: float              # epoch seconds, UTC
    request_id: str
    boundary: int = 1440
    rows: int = 0                 # known row count (for metrics and batching)
    rules: Optional[FieldRules] = None  # which fields may be written; applied on the writer thread
    # (neutralize_formulas, the correlation cells and line end as csv_encoding writes them), when worked
    # out once for several records (csv_encoding.share_row_suffix)
    row_suffix: Optional[Tuple[bool, str]] = None

    def with_rules_applied(self, columns: Sequence[str]) -> Tuple["Record", Tuple[str, ...]]:
        """This record without the fields its rules withhold, and the columns that remain."""
        if self.rules is None or not self.rules.active:
            return self, tuple(columns)
        kept, rows = self.rules.apply(list(columns), rows_as_lists(self.data, columns))
        return dataclasses.replace(self, data=rows, columns=kept, rules=None), kept


