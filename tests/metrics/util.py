"""Scraping a daemon's HTTP endpoint the way Prometheus and a kubelet probe would."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from galleonfs.testing.daemon import RunningDaemon

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(daemon: RunningDaemon, path: str) -> tuple[int, str]:
    """(HTTP status, body) of GET ``path`` on the daemon's metrics address."""
    try:
        with urllib.request.urlopen(daemon.metrics_url(path), timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(daemon: RunningDaemon) -> Samples:
    """Every sample of /metrics, parsed by prometheus-client's own text parser."""
    status, text = get(daemon, "/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
