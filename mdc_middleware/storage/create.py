"""Where batches end up. Both sinks write the same layout, so readers never care which one ran."""
from __future__ import annotations

from typing import Optional

from ..config import Settings, check_writable_directory
from ..metrics import Metrics
from .sink import Sink, SinkError
from .local import LocalSink


def create_sink(settings: Settings, metrics: Optional[Metrics] = None) -> Sink:
    """Blob storage when a connection string or account URL is configured, else the local directory."""
    if settings.uses_blob_storage:
        from .blob import BlobSink

        return BlobSink.from_settings(settings, metrics)
    check_writable_directory(settings.local_dir, "MDC_LOCAL_DIR")
    return LocalSink(settings.local_dir, settings.container, metrics=metrics)


__all__ = ["Sink", "SinkError", "LocalSink", "create_sink"]
