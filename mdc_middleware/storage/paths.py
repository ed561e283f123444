"""The storage layout, built and parsed in one place so writers and readers cannot disagree.

    modeldata/<subscriptionid>/<resourcegroup>/<workspace>/<webservice>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv

Month and day are written zero-padded (``2026/01/05``) so folders sort by date in every tool; readers
also accept Azure ML's unpadded folders (``2026/1/5``). When a file must roll over (a blob reached
its block limit, or the columns changed), the next file of the day is ``data_1.csv``, ``data_2.csv``…
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import numbers
import re
from dataclasses import dataclass
from typing import Optional

ROOT = "modeldata"
DESIGNATIONS = ("inputs", "predictions", "labels", "signals", "general", "unparsed")
MAX_COMPONENT_LENGTH = 128
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")
_FILE_NAME = re.compile(r"^(?P<stem>.+?)(?:_(?P<part>[0-9]+))?(?P<suffix>\.csv|\.jsonl)$")
JSONL = ".jsonl"
SCHEMA_STEM = "_mdc_schema.jsonl"  # beside a day's CSV files: which columns held text (analysis.read uses it)
# Azure ML's current data collector (online endpoints, azureml-ai-monitoring): JSON Lines, a folder per hour.
JSONL_ROOT = "modelDataCollector"
COLLECTIONS = {"inputs": "model_inputs", "predictions": "model_outputs"}  # designation → Azure's collection


def designation_meant(designation: str) -> Optional[str]:
    """The designation of ``DESIGNATIONS`` that ``designation`` looks like a slip of (``input``, ``Predictions``),
    or None: for one of them, and for a name of one's own (``feedback``), which Azure's collector took too."""
    if designation in DESIGNATIONS:
        return None
    close = difflib.get_close_matches(designation.lower(), DESIGNATIONS, n=1, cutoff=0.8)
    return close[0] if close else None


def as_component(value: object) -> object:
    """A whole number as its text: model versions are numbers in Azure ML (``Model.version``), and Azure's
    collector wrote ``model_version=2`` into the path as "2". Anything else is left for
    ``validate_component`` to judge."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return value


def validate_component(name: str) -> str:
    """Reject anything that could escape its folder or container; return the name unchanged."""
    if not isinstance(name, str):
        raise ValueError(f"must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("must not be empty")
    if name in (".", ".."):
        raise ValueError(f"{name!r} is not a valid path component")
    if _FORBIDDEN.search(name):
        raise ValueError(f"{name!r} contains '/', '\\' or a control character")
    if len(name) > MAX_COMPONENT_LENGTH:
        raise ValueError(f"longer than {MAX_COMPONENT_LENGTH} characters")
    if name != name.strip():
        raise ValueError(f"{name!r} has leading or trailing white space")
    return name


# Azure Blob Storage's rule for container names: 3 to 63 characters, lower-case letters, digits and single
# hyphens, a letter or digit first and last. ``$root`` and ``$web`` are the two special containers one may write.
_CONTAINER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


def container_name_problem(name: str) -> str:
    """What is wrong with ``name`` as a blob container's name (Azure would refuse it on the first write), or
    "" when nothing is."""
    if _CONTAINER_NAME.match(name) or name in ("$root", "$web"):
        return ""
    hint = f"; did you mean {name.lower()!r}?" if _CONTAINER_NAME.match(name.lower()) else ""
    return (f"{name!r} is not a name Azure Blob Storage takes for a container: 3 to 63 characters, lower-case "
            f"letters, digits and single hyphens, starting and ending with a letter or digit{hint}")


@dataclass(frozen=True)
class Target:
    """Where one collector's rows go: everything in the path except the date."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    webservice_name: str
    model_name: str
    model_version: str
    designation: str
    file_stem: str = "data"
    layout: str = "csv"   # "jsonl": Azure ML's current data collector layout and record (see ``hour_folder``)
    deployment: str = ""  # with "jsonl": the deployment's folder (default: the model name)

    def __post_init__(self) -> None:
        if self.layout not in ("csv", "jsonl"):
            raise ValueError(f"layout: expected 'csv' or 'jsonl', got {self.layout!r}")
        if self.layout == "jsonl" and not self.file_stem.endswith(JSONL):
            object.__setattr__(self, "file_stem", self.file_stem + JSONL)
        names = ("subscription_id", "resource_group", "workspace_name", "webservice_name",
                 "model_name", "model_version", "designation", "file_stem") + (("deployment",) if self.deployment else ())
        for name in names:
            object.__setattr__(self, name, as_component(getattr(self, name)))
            try:
                validate_component(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        # Hashed for every row batch the writer files: computed once, not from eight strings each time.
        object.__setattr__(self, "_hash", hash(dataclasses.astuple(self)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    @property
    def workspace(self) -> str:
        return f"{self.subscription_id}/{self.resource_group}/{self.workspace_name}"

    def hour_folder(self, hour: dt.datetime) -> str:
        """Azure ML's current layout: ``modelDataCollector/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH``,
        the web service standing for the endpoint, ``model_inputs``/``model_outputs`` for inputs/predictions."""
        return (f"{JSONL_ROOT}/{self.webservice_name}/{self.deployment or self.model_name}/"
                f"{COLLECTIONS.get(self.designation, self.designation)}/"
                f"{hour.year:04d}/{hour.month:02d}/{hour.day:02d}/{hour.hour:02d}")

    def day_folder(self, day: dt.date) -> str:
        return (f"{ROOT}/{self.subscription_id}/{self.resource_group}/{self.workspace_name}/"
                f"{self.webservice_name}/{self.model_name}/{self.model_version}/{self.designation}/"
                f"{day.year:04d}/{day.month:02d}/{day.day:02d}")


def file_name(stem: str, part: int) -> str:
    """The file of ``stem`` after ``part`` rollovers: data.csv, data_1.csv… A stem ending in ``.jsonl`` names
    JSON Lines files (data.jsonl, data_1.jsonl…)."""
    base, suffix = (stem[:-len(JSONL)], JSONL) if stem.endswith(JSONL) else (stem, ".csv")
    return f"{base}{suffix}" if part == 0 else f"{base}_{part}{suffix}"


def file_part(name: str, stem: str) -> Optional[int]:
    """The rollover index of ``name`` when it is a file of ``stem`` (data.csv → 0, data_3.csv → 3)."""
    match = _FILE_NAME.match(name)
    if not match or match.group("stem") + (JSONL if match.group("suffix") == JSONL else "") != stem:
        return None
    return int(match.group("part") or 0)


@dataclass(frozen=True)
class ParsedPath:
    subscription_id: str
    resource_group: str
    workspace_name: str
    webservice_name: str
    model_name: str
    model_version: str
    designation: str
    date: dt.date
    file_name: str


def parse_path(path: str) -> Optional[ParsedPath]:
    """Parse a blob name or a path relative to the container; None when it is not a data file.

    A JSON Lines file (``modelDataCollector/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<name>.jsonl``)
    parses with the endpoint as web service, the deployment as model, the version unknown ("": it is in each
    record) and its collection's designation.
    """
    parts = path.replace("\\", "/").strip("/").split("/")
    if parts[-1].endswith(JSONL):
        return _parse_jsonl_path(parts)
    try:
        start = len(parts) - 1 - parts[::-1].index(ROOT)
    except ValueError:
        return None
    fields = parts[start + 1:]
    if len(fields) != 11 or not fields[-1].endswith(".csv"):
        return None
    try:
        date = dt.date(int(fields[7]), int(fields[8]), int(fields[9]))
    except ValueError:
        return None
    return ParsedPath(*fields[:7], date=date, file_name=fields[10])


_DESIGNATIONS_OF_COLLECTIONS = {collection: designation for designation, collection in COLLECTIONS.items()}


def _parse_jsonl_path(parts: list) -> Optional[ParsedPath]:
    try:
        start = len(parts) - 1 - parts[::-1].index(JSONL_ROOT)
    except ValueError:
        return None
    fields = parts[start + 1:]
    if len(fields) != 8:
        return None
    try:
        date = dt.date(int(fields[3]), int(fields[4]), int(fields[5]))
    except ValueError:
        return None
    return ParsedPath("", "", "", fields[0], fields[1], "", _DESIGNATIONS_OF_COLLECTIONS.get(fields[2], fields[2]),
                      date=date, file_name=fields[7])
