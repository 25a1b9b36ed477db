"""Prometheus metrics of a node (DESIGN §6): names, the worker's counting, the endpoint.

Every mount worker is its own process, so metrics use prometheus-client's multi-process
mode: each worker writes its values to files under ``PROMETHEUS_MULTIPROC_DIR`` (the
daemon's ``<data-dir>/run/metrics``) and galleond's ``/metrics`` adds them up.

* ``definitions`` -- every metric's name, help, labels and buckets (worker side);
* ``volume`` -- the worker's counting in plain ints on the hot path, flushed once a second;
* ``multiproc`` -- the directory: where it is, pruning files of dead workers;
* ``http`` -- galleond's small HTTP server: ``/metrics``, ``/healthz``, ``/readyz``.

What it must not do: cost the FUSE hot path more than a few hundred nanoseconds per
request (the floor is ~76 µs, docs/benchmarks.md), or import pyfuse3 or grpc.
"""

from __future__ import annotations

from .volume import add_qos_throttled

__all__ = ["add_qos_throttled"]
