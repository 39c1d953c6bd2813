"""What ``GET /metrics`` reports, in the Prometheus text format (``prometheus_client``).

Each engine has its own registry, so several apps in one process (tests) never share counts.

- ``scratchgpt_requests_total{status}``: requests by how they ended: completed, cancelled
  (client gone), timed_out, failed, rejected (queue full: 503);
- ``scratchgpt_queue_length``: requests waiting for a slot;
- ``scratchgpt_active_slots`` / ``scratchgpt_slots``: slots decoding now / in all;
- ``scratchgpt_generated_tokens_total``: tokens generated (end-of-text not counted);
- ``scratchgpt_time_to_first_token_seconds``: from a request's arrival to its first token;
- ``scratchgpt_inter_token_latency_seconds``: between two tokens of one choice.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "EngineMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: from a few milliseconds (a small model, idle server) to minutes (a long queue).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
STATUSES = ("completed", "cancelled", "timed_out", "failed", "rejected")


class EngineMetrics:
    """The metrics of one engine; gauges read the engine when scraped."""

    def __init__(self, engine: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "scratchgpt_requests", "Requests by how they ended", ["status"], registry=r
        )
        for status in STATUSES:  # every series exists from the start, at 0
            self.requests.labels(status=status)
        Gauge("scratchgpt_queue_length", "Requests waiting for a slot", registry=r).set_function(
            lambda: engine.queued
        )
        Gauge("scratchgpt_active_slots", "Slots decoding now", registry=r).set_function(
            lambda: engine.active_slots
        )
        Gauge("scratchgpt_slots", "Slots in all", registry=r).set(engine.slots)
        self.tokens = Counter("scratchgpt_generated_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "scratchgpt_time_to_first_token_seconds",
            "From a request's arrival to its first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "scratchgpt_inter_token_latency_seconds",
            "Between two tokens of one choice",
            buckets=ITL_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)
