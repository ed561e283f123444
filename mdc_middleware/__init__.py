"""mdc-middleware: collect model inputs and predictions of live traffic, durably.

    from mdc_middleware import DataCollectionMiddleware, Schema
    app.add_middleware(DataCollectionMiddleware, routes={"/score": Schema(inputs=["a", "b"])})

Collection is off unless enabled (``MDC_ENABLED=true`` or ``AML_MODEL_DC_STORAGE_ENABLED=true``).
"""
from .capture.asgi import DataCollectionMiddleware
from .collector import ModelDataCollector
from .config import ConfigError, Settings
from .capture.routes import Route
from .runtime import flush, metrics, shutdown
from .payloads.schema import PayloadMismatch, Schema
from .capture.wsgi import WSGIDataCollectionMiddleware

__all__ = [
    "DataCollectionMiddleware", "WSGIDataCollectionMiddleware", "ModelDataCollector", "Schema", "Route",
    "Settings", "ConfigError", "PayloadMismatch", "flush", "shutdown", "metrics",
]
__version__ = "0.1.0"
