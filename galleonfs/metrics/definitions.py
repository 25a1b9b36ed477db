"""Every GalleonFS metric: name, help text, labels, buckets (DESIGN §6 naming).

Names start with ``galleonfs_`` and end in their unit (``_bytes``, ``_seconds``) and, for
counters, ``_total``. Per-volume metrics carry ``volume=<name>``; the mount worker of that
volume is the only process that writes them. Node metrics (capacity, volumes by state,
workers up) are not here: galleond computes them at scrape time (``http.NodeCollector``).

Import this module only in a process that exports metrics: prometheus-client picks its
value storage (shared files or process memory) when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``. Gauges name how values of several processes combine:
``livesum``/``livemax`` drop a worker's value once it is dead (``multiproc.forget``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# FUSE request latency: from 50 µs (below the ~76 µs per-request floor of pyfuse3 + trio)
# to 10 s (a request stuck behind a checkpoint or a QoS limit), about 2.5x apart.
LATENCY_BUCKETS_S = (50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Commits are one or two fdatasync calls (0.1-0.3 ms each here) up to a slow disk's seconds.
COMMIT_BUCKETS_S = (100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Checkpoints: an LMDB commit with a full sync, ~0.1 s after 30 s of writes (docs/design.md).
CHECKPOINT_BUCKETS_S = (1e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

V = ("volume",)

fuse_requests = Counter("galleonfs_fuse_requests", "FUSE requests answered, by operation.",
                        (*V, "op"))
fuse_request_duration = Histogram(
    "galleonfs_fuse_request_duration_seconds",
    "Time from a FUSE request reaching the worker's handler to its answer, by operation.",
    (*V, "op"), buckets=LATENCY_BUCKETS_S)
fuse_in_flight = Gauge(
    "galleonfs_fuse_requests_in_flight",
    "FUSE requests the worker has started and not answered (waiting for a commit or a QoS "
    "token), sampled once a second.", V, multiprocess_mode="livesum")
fuse_errors = Counter(
    "galleonfs_fuse_errors",
    "FUSE requests answered with an error, by errno name; a negative lookup counts as ENOENT.",
    (*V, "errno"))
read_bytes = Counter("galleonfs_read_bytes", "Bytes returned by FUSE READ requests.", V)
written_bytes = Counter("galleonfs_written_bytes", "Bytes accepted by FUSE WRITE requests.", V)
cache_hits = Counter("galleonfs_block_cache_hits",
                     "Blocks read from the worker's block cache (not the page cache).", V)
cache_misses = Counter("galleonfs_block_cache_misses",
                       "Blocks read and verified from a data segment on disk.", V)
qos_throttled = Counter("galleonfs_qos_throttled_seconds",
                        "Time FUSE requests waited for a QoS token, summed over requests.", V)

journal_bytes = Counter("galleonfs_journal_bytes", "Bytes appended to the journal.", V)
commit_duration = Histogram("galleonfs_commit_duration_seconds",
                            "Duration of a group commit (fdatasync of segments, then journal).",
                            V, buckets=COMMIT_BUCKETS_S)
checkpoint_duration = Histogram("galleonfs_checkpoint_duration_seconds",
                                "Duration of a checkpoint (LMDB commit with a full sync).",
                                V, buckets=CHECKPOINT_BUCKETS_S)
gc_reclaimed_bytes = Counter("galleonfs_gc_reclaimed_bytes",
                             "Disk bytes garbage collection freed by compacting segments.", V)
failsafe = Gauge("galleonfs_volume_failsafe",
                 "1 while the volume is in failsafe (read-only after corruption or an I/O error).",
                 V, multiprocess_mode="livemax")
volume_size = Gauge("galleonfs_volume_size_bytes", "The mounted volume's size (its quota).", V,
                    multiprocess_mode="livemax")
volume_used = Gauge("galleonfs_volume_used_bytes",
                    "Plaintext bytes of the unique blocks the mounted volume stores.", V,
                    multiprocess_mode="livemax")
volume_enospc = Counter(
    "galleonfs_volume_enospc",
    "Requests of the volume refused with ENOSPC because the host disk under it was full (not "
    "the volume's own quota).", V)
volume_disk_full = Gauge(
    "galleonfs_volume_host_disk_full",
    "1 while the volume refuses writes that need space because the host disk is full.", V,
    multiprocess_mode="livemax")
