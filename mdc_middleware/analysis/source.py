"""Where collected data is read from: the local sink's folder or a blob container.

The reader takes the same settings and environment variables as the writer, so a pod's
configuration (connection string, SAS or managed identity) is enough to read its data back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from ..config import Settings

Source = Union[Path, Any]  # a directory, or an azure.storage.blob.ContainerClient


def is_container(source: Any) -> bool:
    return hasattr(source, "list_blobs") and hasattr(source, "download_blob")


def open_source(settings: Optional[Settings] = None, *, path: Union[str, Path, None] = None) -> Source:
    """A directory when ``path`` is given or no storage is configured, else a ContainerClient."""
    if path is not None:
        return _existing_directory(Path(path))
    settings = settings if settings is not None else Settings.from_env()
    if not settings.uses_blob_storage:
        return _existing_directory(Path(settings.local_dir))
    from ..storage.blob import client_factory

    return client_factory(settings)().get_container_client(settings.container)


def _existing_directory(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"no collected data folder at {str(path)!r}")
    return path


def describe_source(source: Source) -> str:
    """A secret-free name for messages: the folder, or the container's URL without its query."""
    if is_container(source):
        return str(getattr(source, "url", "container")).split("?", 1)[0]
    return str(source)
