"""End-to-end tests of galleond, its gRPC API and galleonctl: real daemon, real mounts.

A package, so that these test modules keep their names (``node.test_config``) even when
another tier has a module of the same name.
"""
