"""Real-mount tests: a worker subprocess serves the volume, the test uses plain syscalls.

A package, so that these test modules keep their names (``mount.test_files``) even when
another tier has a ``test_files.py`` too.
"""
