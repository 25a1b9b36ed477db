"""The object names a backup target accepts: what both targets (directory, S3) check.

Names are ``/``-separated components of ``[A-Za-z0-9._-]`` (none starting with ``.``)
chosen by the repository, never by a user: a name that breaks the rule is a bug here, and
is refused before it reaches a path or a request.

What it must not do: import a target (each target imports this).
"""

from __future__ import annotations

import re

from ..errors import InvalidArgument

_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """An object name the repository made; anything else is a bug, refused loudly."""
    parts = name.split("/")
    if not name or len(name) > 512 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise InvalidArgument(f"{name!r} is not a valid backup object name")
    return name


def check_prefix(prefix: str) -> str:
    if prefix and not (prefix.endswith("/") and check_name(prefix[:-1])):
        raise InvalidArgument(f"{prefix!r} is not a valid backup object prefix")
    return prefix
