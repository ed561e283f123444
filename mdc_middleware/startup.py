"""What an operator sees at start-up: one line saying whether collection works and where data goes, and a
bad setting reported once, loudly, without ever becoming the app's errors (and, once requests come, a route
none of them meets).

The line goes to our logger (``mdc_middleware``) at INFO. Servers configure their own loggers, not ours: when
nothing would print it (no handler anywhere up the logger's chain, or INFO filtered out), it is written to
stderr as well, once per process and destination, so a person starting the server always sees it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Dict, Optional, Sequence

from .config import ConfigError, Settings, stray_variables

logger = logging.getLogger("mdc_middleware")

_lock = threading.Lock()
_announced: set = set()
state: Dict[str, object] = {"enabled": 0, "config_errors": 0}  # read by runtime.metrics()


def describe(settings: Settings, routes: Sequence[str] = ()) -> str:
    """The start-up line: on or off, where rows go (no secret), what is captured, how it is written."""
    if not settings.enabled:
        return ("mdc: collection is OFF (set MDC_ENABLED=true or AML_MODEL_DC_STORAGE_ENABLED=true to collect); "
                "requests pass through untouched")
    if settings.uses_blob_storage:
        where = f"Azure Blob Storage {settings.storage_endpoint}, container {settings.container!r}"
    else:
        where = f"local folder {os.path.abspath(os.path.join(settings.local_dir, settings.container))}"
    journal = settings.resolved_spool_dir
    parts = [f"mdc: collection is ON (pid {os.getpid()}): writing {settings.format.upper()} to {where}",
             f"routes {', '.join(routes) if routes else 'every POST'}" if routes is not None else "",
             f"sample rate {settings.sample_rate:g}" if settings.sample_rate < 1 else "",
             f"encoder {settings.encoder}",
             f"journal and spool {journal}" if journal else "no journal (MDC_SPOOL_DIR unset: a killed process "
             f"loses up to {settings.flush_interval:g} s of rows)",
             f"flush every {settings.flush_interval:g} s"]
    return "; ".join(p for p in parts if p)


def announce(settings: Settings, routes: Optional[Sequence[str]] = None) -> None:
    """Log the start-up line once per process and destination (a forked worker says it again)."""
    key = (os.getpid(), settings.sink_key(), tuple(routes) if routes is not None else None, settings.enabled)
    with _lock:
        if key in _announced:
            return
        _announced.add(key)
        if settings.enabled:
            state["enabled"] = 1
        warn_of_strays = ("stray variables", os.getpid()) not in _announced
        _announced.add(("stray variables", os.getpid()))
    _emit(logging.INFO, describe(settings, routes))
    if warn_of_strays:
        _warn_of_stray_variables()


def _warn_of_stray_variables() -> None:
    """Variables named like ours that nothing reads and that did not fail start-up (``config.stray_variables``):
    said once per process, as a warning."""
    strays = [stray for stray in stray_variables(os.environ) if not stray.refused]
    if strays:
        names = ", ".join(f"{s.name} (did you mean {s.meant}?)" if s.meant else s.name for s in strays)
        _emit(logging.WARNING, f"mdc: {names}: set, but mdc-middleware reads no variable of that name; ignored")


def warn(message: str) -> None:
    """A warning about the configuration that an operator must see (a route no request meets): our logger,
    and stderr when nothing would print it."""
    _emit(logging.WARNING, message)


def warn_once(key: Any, message: str) -> None:
    """``warn``, once per process for ``key`` (a collector made in every request must not flood the log)."""
    with _lock:
        seen = (os.getpid(), "warned", key)
        if seen in _announced:
            return
        _announced.add(seen)
    _emit(logging.WARNING, message)


def refuse(error: ConfigError, where: str) -> None:
    """A setting that cannot work: said once per process and message, loudly; counted. ``where``: what
    happens now, in a sentence."""
    message = f"mdc: collection is OFF because of a bad setting: {error}. {where} Fix the setting and restart."
    with _lock:
        state["config_errors"] = int(state["config_errors"]) + 1  # type: ignore[call-overload]
        key = (os.getpid(), str(error))
        if key in _announced:
            return
        _announced.add(key)
    _emit(logging.ERROR, message)


def _emit(level: int, message: str) -> None:
    logger.log(level, message)
    if not _printed(level):
        print(message, file=sys.stderr, flush=True)


def _printed(level: int) -> bool:
    """Whether a record of this level on our logger reaches a handler (Python's last resort prints WARNING
    and up when there is none)."""
    if not logger.isEnabledFor(level):
        return False
    current: Optional[logging.Logger] = logger
    while current is not None:
        if any(level >= handler.level for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return level >= logging.WARNING
