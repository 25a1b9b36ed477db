"""Metrics, health endpoints, ``volume stats`` and ``top`` against a real galleond."""
