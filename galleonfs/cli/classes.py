"""``galleonctl storage-class ...``: named parameter sets for volumes, from YAML or JSON files.

The file is read and checked here (unknown keys, the two enums); the parameters themselves
are the daemon's to check, so the API and the CLI refuse the same things the same way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgument
from ..managers.model import BindingMode, ReclaimPolicy
from ..rpc import convert
from . import output
from .access import client as _client

_CLASS_KEYS = {"name", "parameters", "reclaim_policy", "reclaimPolicy", "volume_binding_mode",
               "volumeBindingMode", "default", "is_default"}


def read_class_file(path: str) -> Any:
    from ..v1 import types_pb2

    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else _yaml_load(text)
    except ValueError as exc:
        raise InvalidArgument(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path} must hold a mapping with at least 'name'")
    unknown = sorted(set(data) - _CLASS_KEYS)
    if unknown:
        raise InvalidArgument(f"{path}: unknown key {unknown[0]!r}; use name, parameters, "
                              f"reclaim_policy, volume_binding_mode, default")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"{path}: parameters must be a mapping")
    reclaim_text = str(data.get("reclaim_policy", data.get("reclaimPolicy", "delete"))).lower()
    binding_text = str(data.get("volume_binding_mode", data.get("volumeBindingMode", "Immediate")))
    reclaim = {p.value: p for p in ReclaimPolicy}.get(reclaim_text)
    binding = {b.value.lower(): b for b in BindingMode}.get(binding_text.lower().replace("_", ""))
    if reclaim is None:
        raise InvalidArgument(f"{path}: reclaim_policy must be delete or retain, not {reclaim_text!r}")
    if binding is None:
        raise InvalidArgument(f"{path}: volume_binding_mode must be Immediate or WaitForFirstConsumer")
    return types_pb2.StorageClass(
        name=str(data.get("name", "")), parameters={str(k): _parameter(v) for k, v in parameters.items()},
        reclaim_policy=convert.reclaim_policy_to_pb(reclaim),
        volume_binding_mode=convert.binding_mode_to_pb(binding),
        is_default=bool(data.get("default", data.get("is_default", False))))


def _parameter(value: Any) -> str:
    # YAML 1.1 reads an unquoted on/off (yes/no) as a boolean; in a storage class those
    # words only ever mean a switch (``dedup: off``), so give the daemon the word back.
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _yaml_load(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def class_create(args: argparse.Namespace) -> int:
    cls = read_class_file(args.file)
    with _client(args) as c:
        created = c.create_storage_class(cls)
    print(f"storage class {created.name} created")
    return 0


def class_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, [output.to_dict(x) for x in c.list_storage_classes()], output.class_rows)


def class_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        return output.emit(args, output.to_dict(c.get_storage_class(args.name)),
                     lambda d: output.class_rows([d]))


def class_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_storage_class(args.name)
    print(f"storage class {args.name} deleted")
    return 0


def add_commands(nouns: Any, read_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``storage-class`` and its verbs; ``read_command`` adds ``-o``."""
    classes = nouns.add_parser("storage-class", help="manage storage classes").add_subparsers(
        dest="verb", required=True, metavar="VERB")
    p = classes.add_parser("create", help="create a storage class from a YAML or JSON file",
                           description="Create a storage class from FILE, e.g.:\n\n  name: fast\n"
                                       "  parameters: {block_size: 128K}\n  reclaim_policy: retain\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.set_defaults(func=class_create)
    read_command(classes, "list", "list storage classes", class_list)
    read_command(classes, "get", "show one storage class", class_get).add_argument("name")
    p = classes.add_parser("delete", help="delete a storage class", description="Delete a storage class.")
    p.add_argument("name")
    p.set_defaults(func=class_delete)
