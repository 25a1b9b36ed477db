"""The CSI driver (``galleonfs-csi``): the CSI specification's Identity, Controller and Node
services on a unix socket, for Kubernetes, Nomad and any other container orchestrator.

A client of galleond, never more: every volume operation is a call through
``rpc.client.Client`` (authenticated like any caller), and every mount is made by galleond
(its mount points are checked and pinned there, under its ``mount_roots``). The driver
itself opens no volume and mounts nothing. ``v1/`` is the generated ``csi.v1`` API
(``proto/csi/v1/csi.proto``; ``python -m galleonfs.rpc.codegen``).
"""
