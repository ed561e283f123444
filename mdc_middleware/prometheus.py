"""Metrics in the Prometheus text format (optional extra: ``pip install 'mdc-middleware[prometheus]'``).

Served by the middleware itself at ``MDC_METRICS_PATH`` (e.g. ``/metrics``) on the app's own port, so
a scrape config needs no second port. Counters come from ``mdc_middleware.metrics()``.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Tuple

from . import runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _families(snapshot: Dict[str, object]) -> Iterator[object]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from .metrics import Metrics

    for name in Metrics.COUNTERS:
        family = CounterMetricFamily(f"mdc_{name}", f"mdc-middleware {name.replace('_', ' ')}")
        family.add_metric([], float(snapshot.get(name, 0)))  # type: ignore[arg-type]
        yield family
    skipped = CounterMetricFamily("mdc_skipped", "payloads or rows not collected, by reason", labels=["reason"])
    for reason, count in sorted(dict(snapshot.get("skipped") or {}).items()):
        skipped.add_metric([reason], float(count))
    yield skipped
    dropped = CounterMetricFamily("mdc_dropped_rows", "rows dropped by policy, by reason", labels=["reason"])
    for reason, count in sorted(dict(snapshot.get("dropped_reasons") or {}).items()):
        dropped.add_metric([reason], float(count))
    yield dropped
    for name, help_text in (("enabled", "1 when this process collects, 0 when collection is off"),
                            ("config_errors", "bad settings refused (collection off); see the log"),
                            ("queue_depth", "items waiting in the queue"),
                            ("pending_rows", "rows batched or in delivery"),
                            ("spool_bytes", "bytes waiting in the disk spool"),
                            ("write_seconds_mean", "mean seconds per storage write"),
                            ("write_seconds_max", "longest storage write, seconds")):
        gauge = GaugeMetricFamily(f"mdc_{name}", help_text)
        gauge.add_metric([], float(snapshot.get(name, 0) or 0))  # type: ignore[arg-type]
        yield gauge


class _Collector:
    def __init__(self, source: Callable[[], Dict[str, object]]) -> None:
        self.source = source

    def collect(self) -> Iterator[object]:
        return _families(self.source())


def render(source: Callable[[], Dict[str, object]] = runtime.metrics) -> Tuple[bytes, str]:
    """(body, content type) of the current metrics in Prometheus text format."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        body = b"# prometheus-client is not installed: pip install 'mdc-middleware[prometheus]'\n"
        return body, CONTENT_TYPE
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(source))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE
