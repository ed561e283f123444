"""Which fields may be written: feature allowlist and denylist, redaction, and request headers.

Rules run on the writer thread, just before rows become CSV, for captured requests and ``collect()``
alike, so a field declared sensitive never reaches storage whatever path it came by. Names match
case-insensitively and may be globs (``*_email``); keys inside JSON-valued cells are scrubbed too,
so ``{"customer": {"ssn": ...}}`` loses its ``ssn`` even though the column is ``customer``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

Redactor = Callable[[Any], Any]

# Never collected, whatever the configuration says: credentials and session state.
FORBIDDEN_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
_SECRET_HINTS = ("key", "token", "secret", "password", "signature", "credential", "session")
HEADER_PREFIX = "$mdc_header_"
MAX_HEADER_VALUE = 256


def check_header_allowlist(names: Iterable[str]) -> Tuple[str, ...]:
    """Lower-cased header names; credentials and anything named like one are refused."""
    out = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in FORBIDDEN_HEADERS or any(hint in name for hint in _SECRET_HINTS):
            raise ValueError(f"header {name!r} may carry credentials and is never collected")
        out.append(name)
    return tuple(out)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns)


@dataclass(frozen=True)
class FieldRules:
    """``include``: only these columns (None: all); ``exclude``: never these; ``redact``: column →
    function applied to each of its values (e.g. a keyed hash) before writing."""

    include: Optional[Tuple[str, ...]] = None
    exclude: Tuple[str, ...] = ()
    redact: Mapping[str, Redactor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence of names, not a string")
            if value is not None:
                object.__setattr__(self, name, tuple(str(v).lower() for v in value))
        if not all(callable(f) for f in self.redact.values()):
            raise TypeError("redact must map column names to callables")
        object.__setattr__(self, "redact", {str(k).lower(): f for k, f in self.redact.items()})

    @property
    def active(self) -> bool:
        return self.include is not None or bool(self.exclude) or bool(self.redact)

    def merged(self, other: Optional["FieldRules"]) -> "FieldRules":
        """Both sets of rules at once: the narrower allowlist, the union of the rest."""
        if other is None or not other.active:
            return self
        if not self.active:
            return other
        include = self.include if other.include is None else (
            other.include if self.include is None else tuple(n for n in self.include if n in other.include))
        return FieldRules(include, self.exclude + other.exclude, {**self.redact, **other.redact})

    def allows(self, column: str) -> bool:
        if column.startswith("$"):  # correlation and header columns are governed elsewhere
            return True
        if self.include is not None and not _matches(column, self.include):
            return False
        return not _matches(column, self.exclude)

    def apply(self, columns: Sequence[str], rows: Iterable[List[Any]]) -> Tuple[Tuple[str, ...], List[list]]:
        keep = [i for i, name in enumerate(columns) if self.allows(name)]
        redactors = [self._redactor(columns[i]) for i in keep]
        out = []
        for row in rows:
            cells = []
            for i, redactor in zip(keep, redactors):
                value = row[i] if i < len(row) else None
                if redactor is not None and value is not None:
                    value = redactor(value)
                elif isinstance(value, (dict, list)):
                    value = self._scrub(value)
                cells.append(value)
            out.append(cells)
        return tuple(columns[i] for i in keep), out

    def _redactor(self, column: str) -> Optional[Redactor]:
        lowered = column.lower()
        for pattern, function in self.redact.items():
            if fnmatch.fnmatchcase(lowered, pattern):
                return function
        return None

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                name = str(key)
                if _matches(name, self.exclude):
                    continue
                redactor = self._redactor(name)
                out[key] = redactor(item) if redactor is not None and item is not None else self._scrub(item)
            return out
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        return value


NO_RULES = FieldRules()
