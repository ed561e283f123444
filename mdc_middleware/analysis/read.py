"""Read collected rows back into pandas, from a local directory or a blob container.

Both hold the same layout. Every CSV file of a day is read (``data.csv`` and its rollover siblings
``data_1.csv``…), padded and unpadded month/day folders alike.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import pandas as pd

from ..records.csv_encoding import unneutralized
from ..storage.paths import JSONL, JSONL_ROOT, ROOT, ParsedPath, parse_path
from .source import describe_source
from .source import is_container as _is_container

Source = Union[str, Path, Any]  # a directory, or an azure.storage.blob.ContainerClient
Day = Union[dt.date, dt.datetime, str, Any]  # a date, a datetime or pandas Timestamp, or text ("2026-11-01")


def as_day(value: Optional[Day], name: str = "day") -> Optional[dt.date]:
    """The UTC day a ``start``/``end`` filter means. Folders are UTC days: an aware datetime is converted to
    UTC first, a naive one is taken as UTC. Raises ValueError naming ``name`` for anything else."""
    if value is None or type(value) is dt.date:
        return value
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a date, a datetime or text like '2026-11-01', got {value!r}") from exc
    if stamp is pd.NaT:
        raise ValueError(f"{name}: expected a date, got {value!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.date()


def list_data_files(source: Source, *, designation: Optional[str] = None, model: Optional[str] = None,
                    version: Optional[str] = None, start: Optional[Day] = None,
                    end: Optional[Day] = None) -> List[Tuple[Any, ParsedPath]]:
    """(path or blob name, ParsedPath) of every data file that passes the filters, by date then name.

    A directory may be the local sink's root (``mdc-data``) or the container folder inside it. ``start`` and
    ``end`` are UTC days, both included (``as_day``).
    """
    start, end = as_day(start, "start"), as_day(end, "end")
    found = []
    for name, _ in _data_files(source):
        parsed = parse_path(Path(name).as_posix() if not isinstance(name, str) else name)
        if parsed is not None and _wanted(parsed, designation, model, version, start, end):
            found.append((name, parsed))
    found.sort(key=lambda item: (item[1].date, _part_order(item[1].file_name), str(item[0])))
    return found


def _data_files(source: Source) -> Iterable[Tuple[Any, int]]:
    """(path or blob name, size in bytes) of every CSV under the source."""
    if _is_container(source):
        for root, suffix in ((ROOT, ".csv"), (JSONL_ROOT, JSONL)):
            for blob in source.list_blobs(name_starts_with=root + "/"):
                if blob.name.endswith(suffix):
                    yield blob.name, int(blob.size or 0)
    else:
        if not Path(source).is_dir():  # a mistyped folder must not read as "nothing collected yet"
            raise FileNotFoundError(f"no collected data folder at {str(source)!r}")
        for pattern in ("*.csv", "*" + JSONL):
            for path in Path(source).rglob(pattern):
                yield path, path.stat().st_size


def file_sizes(source: Source) -> Dict[str, int]:
    """Size of every data file by its name (posix path or blob name): what `tail` watches grow."""
    return {Path(name).as_posix() if not isinstance(name, str) else name: size
            for name, size in _data_files(source)}


@dataclass(frozen=True)
class Inventory:
    """One model version's designation as stored: what ``mdc ls`` prints."""

    webservice: str
    model: str
    version: str
    designation: str
    first_day: dt.date
    last_day: dt.date
    days: int
    files: int
    bytes: int


def inventory(source: Source, *, model: Optional[str] = None, version: Optional[str] = None,
              designation: Optional[str] = None) -> List[Inventory]:
    """Models, versions, designations and the dates present, without downloading any data."""
    groups: Dict[Tuple[str, str, str, str], List[Tuple[dt.date, int]]] = {}
    for name, size in _data_files(source):
        parsed = parse_path(Path(name).as_posix() if not isinstance(name, str) else name)
        if parsed is None or not _wanted(parsed, designation, model, version, None, None):
            continue
        key = (parsed.webservice_name, parsed.model_name, parsed.model_version, parsed.designation)
        groups.setdefault(key, []).append((parsed.date, size))
    out = []
    for key in sorted(groups):
        entries = groups[key]
        days = {day for day, _ in entries}
        out.append(Inventory(*key, first_day=min(days), last_day=max(days), days=len(days),
                             files=len(entries), bytes=sum(size for _, size in entries)))
    return out


def absent_name(present: Iterable[Tuple[str, str, str]], designation: Optional[str], model: Optional[str],
                version: Optional[str], where: str) -> Optional[str]:
    """"no designation 'imputs' in <where>; there is: inputs, predictions" when a name asked for is in none of
    the (designation, model, version) ``present`` while others are: a typo, most likely. None when each is
    present, or there is no data at all."""
    present = list(present)
    if not present:
        return None
    for label, wanted, names in (
            ("designation", designation, {d for d, _, _ in present}),
            ("model", model, {m for d, m, _ in present if designation in (None, d)}),
            ("version", version, {v for d, m, v in present if model in (None, m) and designation in (None, d)})):
        if wanted is not None and str(wanted) not in names and "" not in names:
            return f"no {label} {str(wanted)!r} in {where}; there is: {', '.join(sorted(names)) or 'none'}"
    return None


def _part_order(name: str) -> int:
    stem = name.rsplit(".", 1)[0]
    tail = stem.rsplit("_", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def _wanted(parsed: ParsedPath, designation: Optional[str], model: Optional[str], version: Optional[str],
            start: Optional[dt.date], end: Optional[dt.date]) -> bool:
    jsonl = parsed.file_name.endswith(JSONL)  # model and version are in its records: filtered when read
    return ((designation is None or parsed.designation == designation)
            and (model is None or jsonl or parsed.model_name == model)
            and (version is None or jsonl or parsed.model_version == str(version))
            and (start is None or parsed.date >= start)
            and (end is None or parsed.date <= end))


def read_collected(source: Source, designation: Optional[str] = None, *, model: Optional[str] = None,
                   version: Optional[str] = None, start: Optional[Day] = None, end: Optional[Day] = None,
                   as_text: bool = False,
                   progress: Optional[Callable[[Iterable[Any]], Iterable[Any]]] = None) -> pd.DataFrame:
    """All rows of the matching files in one DataFrame (columns united across files).

    Cells are the values collected: text the writer neutralised (``'=1+1``) reads as it was sent (``=1+1``).
    ``as_text`` keeps every cell exactly as written (strings, empty cells as ""), for byte-exact checks.
    ``progress`` wraps the list of files (e.g. ``tqdm``) to show downloads as they go.

    :raises FileNotFoundError: ``source`` is a folder that does not exist.
    Nothing collected yet gives an empty frame; so does a designation, model or version that is nowhere in the
    data while others are, with a ``UserWarning`` naming what there is (``absent_name``).
    """
    options = dict(dtype=str, keep_default_na=False)  # typed below, column by column, never by guessing
    frames = []
    files = list_data_files(source, designation=designation, model=model, version=version, start=start, end=end)
    if not files and (designation, model, version) != (None, None, None):
        present = [(e.designation, e.model, e.version) for e in inventory(source)]
        absent = absent_name(present, designation, model, version, describe_source(source))
        if absent is not None:
            warnings.warn(f"{absent}. Nothing read", UserWarning, stacklevel=2)
    notes: Dict[str, Optional[set]] = {}  # folder → the writer's notes on its text columns
    for name, _ in (progress(files) if progress else files):
        if _is_container(source):
            handle: Any = io.BytesIO(source.download_blob(name).readall())
        else:
            handle = name
        if str(name).endswith(JSONL):  # JSON keeps its own types: only the $aml_* columns are typed
            frame = read_jsonl(handle, as_text, model, version)
            frames.append(frame if as_text else typed(frame, set(frame.columns) - set(_AML_TYPED)))
            continue
        frame = pd.read_csv(handle, **options)
        if not as_text:
            folder = _folder_of(name)
            if folder not in notes:
                notes[folder] = text_columns_noted(source, [folder])
            frame = typed(as_collected(frame), notes[folder])
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame.fillna("") if as_text else frame


_JSONL_META = (("correlationid", "$aml_dc_correlation_id"), ("time", "$aml_dc_scoring_timestamp"),
               ("modelname", "$aml_model_name"), ("modelversion", "$aml_model_version"),
               ("xrequestid", "$aml_request_id"))


def read_jsonl(handle: Any, as_text: bool = False, model: Optional[str] = None,
               version: Optional[str] = None) -> pd.DataFrame:
    """The rows of a JSON Lines file of Azure ML's current collector (``MDC_FORMAT=jsonl``): each record's
    ``data`` rows, with its correlation id, time, model and request id in the ``$aml_*`` columns CSV files
    have. ``model``/``version`` keep the records of that model name (where records name it) and version."""
    lines = handle.read().splitlines() if hasattr(handle, "read") else Path(handle).read_bytes().splitlines()
    return read_jsonl_lines(lines, as_text, model, version)


def read_jsonl_lines(lines: Iterable[bytes], as_text: bool = False, model: Optional[str] = None,
                     version: Optional[str] = None) -> pd.DataFrame:
    """``read_jsonl`` of some of a file's lines."""
    rows: List[Dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        if version is not None and str(record.get("modelversion", "")) != str(version):
            continue
        if model is not None and record.get("modelname", model) != model:
            continue
        data = record.get("data")
        meta = {column: record.get(key, "") for key, column in _JSONL_META}
        for row in data if isinstance(data, list) else [data]:
            cells = row if isinstance(row, dict) else {"value": row}
            if as_text:  # each value as its own text, before pandas makes a column of them (3 is not 3.0)
                cells = {key: _text_cell(value) for key, value in cells.items()}
            rows.append({**cells, **meta})
    return pd.DataFrame(rows).fillna("") if as_text else pd.DataFrame(rows)


def _text_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


_AML_TYPED = ("$aml_dc_scoring_timestamp", "$aml_dc_boundary")  # the $aml_* columns typed as other than text
_TEXT_COLUMNS = ("$aml_dc_correlation_id", "$aml_request_id", "$aml_workspace", "$aml_service_name",
                 "$aml_model_name", "$aml_model_version")


def _folder_of(name: Any) -> str:
    return Path(name).parent.as_posix() if not isinstance(name, str) else name.rsplit("/", 1)[0]


def text_columns_noted(source: Source, folders: Iterable[str]) -> Optional[set]:
    """The columns the writer noted as text (``_mdc_schema*.jsonl`` beside the data) in these folders; None
    when no folder has notes (files of Azure's collector, or of an older writer)."""
    found: Optional[set] = None
    for folder in folders:
        if _is_container(source):
            names: List[Any] = [b.name for b in source.list_blobs(name_starts_with=f"{folder}/_mdc_schema")]
            texts = [source.download_blob(n).readall().decode("utf-8", "replace") for n in names]
        else:
            texts = [p.read_text(encoding="utf-8", errors="replace") for p in Path(folder).glob("_mdc_schema*.jsonl")]
        for text in texts:
            found = found if found is not None else set()
            for line in text.splitlines():
                try:
                    found.update(json.loads(line).get("text_columns", []))
                except (ValueError, AttributeError):
                    continue  # a torn line: the conservative typing still applies
    return found


def as_collected(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells of CSV files as collected: the quote the writer put before a formula's first character (or before a
    quote) taken off, ``'=1+1`` read as ``=1+1`` (``records.csv_encoding.unneutralized``). Apply once."""
    return pd.DataFrame({name: unneutralized(column) for name, column in frame.items()}, index=frame.index)


def typed(frame: pd.DataFrame, text: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """Cells read as text (``dtype=str``), typed without changing a value.

    The ``$aml_*`` columns by what they are: the scoring timestamp a UTC datetime, the boundary an integer, ids
    and names (the model version ``1.10`` too) text. Any other column becomes numbers only when every cell
    reads back as exactly the text written (``501`` does; ``00501``, ``+3``, ``1.10`` and ``1e3`` do not, and
    stay text), empty cells as missing: so a Parquet written from it holds the values collected. With the
    writer's notes (``text``: the columns it saw sent as text), those stay text whatever they hold and any
    other column of numbers is read as numbers.
    """
    noted = text is not None
    text = set(text or ())
    out = {}
    for name in frame.columns:
        column = frame[name]
        if name == "$aml_dc_scoring_timestamp":
            out[name] = _utc_times(column)
        elif name == "$aml_dc_boundary":
            out[name] = pd.to_numeric(column.replace("", None)).astype("Int64")
        elif name in text and column.dtype != object:
            out[name] = column  # typed already (JSON Lines): kept as it is
        elif name in _TEXT_COLUMNS or name in text:
            out[name] = column.astype(str)
        else:
            out[name] = _numbers_if_exact(column, exact=not noted)
    return pd.DataFrame(out, index=frame.index)


def _utc_times(column: pd.Series) -> pd.Series:
    """UTC times; a cell that is no time (a hand-edited file) becomes NaT rather than failing the read."""
    try:
        return pd.to_datetime(column.replace("", None), utc=True, format="ISO8601", errors="coerce")
    except (TypeError, ValueError):  # pandas before 2.0 has no "ISO8601" format, and needs none
        return pd.to_datetime(column.replace("", None), utc=True, errors="coerce")


def _plain_int(text: str) -> bool:
    """A whole number as Python writes an int: no sign but '-', no leading zero, no exponent."""
    digits = text[1:] if text.startswith("-") else text
    return digits.isdigit() and (digits == "0" or not digits.startswith("0"))


def _numbers_if_exact(column: pd.Series, exact: bool = True) -> pd.Series:
    present = column[column != ""]
    if present.empty:
        return column
    try:
        numbers = pd.to_numeric(present)
    except (ValueError, TypeError):
        return column
    if not exact and present.str.match(r"^(\+|-?0[0-9])").any():
        return column  # a leading zero or plus sign is text whatever the notes say: 00501 is no number
    if not exact and numbers.dtype.kind in "iuf":  # the writer noted no text here: numbers it was sent
        whole = numbers.dtype.kind in "iu"
        values = pd.to_numeric(column.replace("", None))
        return values.astype("Int64") if whole and len(present) < len(column) else values
    if numbers.dtype.kind in "iu":
        if (numbers.astype(str) != present).any():
            return column
        return pd.to_numeric(column.replace("", None)).astype("Int64") if len(present) < len(column) else numbers
    if numbers.dtype.kind == "f":  # each cell as Python writes that float, or a whole number as it writes ints
        as_float = numbers.map(repr) == present
        as_int = numbers.map(lambda v: v.is_integer() and str(int(v)) == str(v)[:-2]) & present.map(_plain_int)
        if not (as_float | as_int).all():
            return column
        return pd.to_numeric(column.replace("", None)).astype("float64")
    return column
