"""GalleonFS: a distributed volume filesystem.

This package holds every layer (see ../DESIGN section 5): ``engine`` and ``meta`` (the
single-node store), ``vfs`` (POSIX semantics), ``fuse`` (the pyfuse3 adapter and the mount
worker) and ``cli``. Importing the package imports nothing heavy.
"""

__version__ = "0.1.0"
