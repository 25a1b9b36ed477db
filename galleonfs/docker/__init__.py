"""The Docker volume plugin (``galleonfs-docker``): Docker's volume-plugin protocol (JSON
over HTTP on a unix socket) for ``docker volume create -d galleonfs`` and
``docker run -v NAME:/path``.

Like the CSI driver, a client of galleond and nothing more: volumes are galleond's, and
every mount is a galleond mount point (under its ``mount_roots``).
"""
