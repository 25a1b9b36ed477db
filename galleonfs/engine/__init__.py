"""The single-node storage engine: journal, segments, block frames, checkpoint, recovery, GC.

``Engine`` (``engine.py``) is the facade and wires the parts its docstring lists (blocks,
operations, checkpoint, recovery, gc, ...), which import nothing above them. Built on an
open ``Engine``: ``snapshots`` (which ``Engine.open`` resumes, so it sees the engine only
through its ``Volume`` protocol), ``clones``, ``rekey``, ``fsck`` and ``committer``.
"""
