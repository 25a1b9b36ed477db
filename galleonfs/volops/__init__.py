"""Volume operations: one typed interface (``protocol.VolumeOps``) for everything the daemon
does to one volume, whether a mount worker serves it (``online``) or not (``offline``, a
helper process), with one implementation (``local.EngineOps``) and one serializer
(``codec``) of one set of messages (``messages``).

Below the managers, above the engine; imports neither ``fuse``, ``workers``, ``managers``
nor anything above them. Only ``local`` and ``helper`` import the engine, and only the
helper process and the mount worker import them.
"""
