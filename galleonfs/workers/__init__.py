"""Mount workers from the daemon's side: starting them (``launch``), supervising them
(``supervisor``) and the mount points that show their FUSE mount (``mounts``, ``mountapi``).

Below the managers, which are handed a ``Supervisor`` and never build one. Imports only the
floor, ``fuse.ready``/``fuse.kernel`` (the worker's line and the kernel's mount table),
``volops`` (the control socket) and ``metrics``; never a manager, never the engine's
internals.
"""
