"""Encryption at rest: key managers (``keys``) and the sealing of frames, metadata and
journal records (``codec``). Only this package imports ``cryptography``."""
