"""The mobility tier (issue 15): folder import/export through real daemons and mounts."""
