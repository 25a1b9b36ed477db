"""The metrics tests reuse the daemon tests' fixture: a real galleond on ``tmp_path`` (its
metrics on a free port), stopped and checked (clean exit, fsck, quiet logs) at the end."""

from node.conftest import daemon  # noqa: F401  (a fixture, found by pytest by name)
