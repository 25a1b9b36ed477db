"""Quality of service: per-volume IOPS and throughput limits, guarantees and bursts.

``policy``: what an operator asks for (validated; stored as JSON in the node catalog).
``bucket``: token buckets on an injectable clock, pure arithmetic, exact on a fake clock.
``allocation``: how the daemon splits a node's budget among competing volumes.
``throttle``: the mount worker's side: charge a FUSE read or write, wait (trio) if due.

What it must not do: fail a request. A throttled request waits; it never gets an error.
"""
