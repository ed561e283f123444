"""The storage layout, built and parsed in one place so writers and readers cannot disagree.

    modeldata/<subscriptionid>/<resourcegroup>/<workspace>/<webservice>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv

Month and day are written zero-padded (``2026/01/05``) so folders sort by date in every tool; readers
also accept Azure ML's unpadded folders (``2026/1/5``). When a file must roll over (a blob reached
its block limit, or the columns changed), the next file of the day is ``data_1.csv``, ``data_2.csv``…
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import numbers
import re
from dataclasses import dataclass
from typing import Optional

ROOT = "modeldata"
DESIGNATIONS = ("inputs", "predictions", "labels", "signals", "general", "unparsed")
MAX_COMPONENT_LENGTH = 128
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")
_FILE_NAME = re.compile(r"^(?P<stem>.+?)(?:_(?P<part>[0-9]+))?\.csv$")


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

    def __post_init__(self) -> None:
        for name in ("subscription_id", "resource_group", "workspace_name", "webservice_name",
                     "model_name", "model_version", "designation", "file_stem"):
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

    def day_folder(self, day: dt.date) -> str:
        return (f"{ROOT}/{self.subscription_id}/{self.resource_group}/{self.workspace_name}/"
                f"{self.webservice_name}/{self.model_name}/{self.model_version}/{self.designation}/"
                f"{day.year:04d}/{day.month:02d}/{day.day:02d}")


def file_name(stem: str, part: int) -> str:
    return f"{stem}.csv" if part == 0 else f"{stem}_{part}.csv"


def file_part(name: str, stem: str) -> Optional[int]:
    """The rollover index of ``name`` when it is a file of ``stem`` (data.csv → 0, data_3.csv → 3)."""
    match = _FILE_NAME.match(name)
    if not match or match.group("stem") != stem:
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
    """Parse a blob name or a path relative to the container; None when it is not a data file."""
    parts = path.replace("\\", "/").strip("/").split("/")
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
