"""The single-node storage engine: journal, segments, block frames, checkpoint, recovery, GC.

``Engine`` (in ``engine.py``) is the entry point; the other modules are its parts.
"""
