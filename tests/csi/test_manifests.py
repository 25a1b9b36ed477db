"""deploy/kubernetes/ against the driver: every manifest parses, and every name, image,
socket path and argument in them is one the driver (and its sidecars' conventions) agree
with: the CSIDriver's name is the plugin name, the driver's arguments parse with its own
parser, the sidecars dial the socket the driver serves, the registrar tells the kubelet the
host path of that socket, the liveness probe's port is the one the container exposes, the
storage classes' parameters pass the driver's checks. No cluster is needed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import galleonfs
from galleonfs.csi import main as csi_main
from galleonfs.csi import spec
from galleonfs.csi.controller import CAPABILITIES as CONTROLLER_CAPABILITIES
from galleonfs.csi.controller import RPC

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
IMAGE = "galleonfs/galleonfs-csi"


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], name
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def containers(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def mount_of(workload: dict[str, Any], container: dict[str, Any], path_in_container: str) -> dict[str, Any]:
    """The pod volume that holds ``path_in_container`` in ``container``, and where."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    best = max((m for m in container["volumeMounts"]
                if path_in_container == m["mountPath"] or path_in_container.startswith(m["mountPath"].rstrip("/") + "/")),
               key=lambda m: len(m["mountPath"]))
    return {"volume": volumes[best["name"]], "mountPath": best["mountPath"], "name": best["name"]}


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, args)
    return values[0]


def test_every_manifest_parses_and_the_kustomization_lists_them_all() -> None:
    docs = documents()
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = {kind for kind, _ in docs}
    assert {"CSIDriver", "DaemonSet", "Deployment", "ClusterRole", "StorageClass",
            "VolumeSnapshotClass", "ServiceAccount"} <= kinds


def test_csidriver_matches_the_plugin() -> None:
    driver = documents()[("CSIDriver", spec.DRIVER_NAME)]
    # attachRequired false exactly because the controller offers no ControllerPublishVolume.
    assert driver["spec"]["attachRequired"] is False
    assert RPC.PUBLISH_UNPUBLISH_VOLUME not in CONTROLLER_CAPABILITIES


@pytest.mark.parametrize(("kind", "name", "mode"), [("Deployment", "galleonfs-csi-controller", "controller"),
                                                     ("DaemonSet", "galleonfs-csi-node", "node")])
def test_driver_containers_speak_the_drivers_arguments_and_socket(kind: str, name: str, mode: str) -> None:
    workload = documents()[(kind, name)]
    pod = containers(workload)
    driver = pod["galleonfs-csi"]
    kustomize = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["images"]
    assert driver["image"] == f"{IMAGE}:{galleonfs.__version__}"
    assert kustomize == [{"name": IMAGE, "newTag": galleonfs.__version__}]
    # The arguments parse with the driver's own parser ($(NODE_NAME) is the kubelet's doing).
    args = csi_main.build_parser().parse_args([a.replace("$(NODE_NAME)", "node-1") for a in driver["args"]])
    assert args.mode == mode
    socket = csi_main.socket_path(args.endpoint)
    served = mount_of(workload, driver, socket)
    galleond = args.galleond_address.removeprefix("unix:")
    held = mount_of(workload, driver, galleond)
    assert held["volume"]["hostPath"]["path"] == "/run/galleonfs"      # galleond.toml's default listen
    assert galleond == csi_main.DEFAULT_GALLEOND.removeprefix("unix:")
    sidecars = [c for c in pod.values() if c is not driver]
    assert sidecars
    for sidecar in sidecars:
        address = flag(sidecar["args"], "csi-address")
        dialled = mount_of(workload, sidecar, address)
        assert dialled["name"] == served["name"], sidecar["name"]
        assert address.removeprefix(dialled["mountPath"]) == socket.removeprefix(served["mountPath"])
    probe = pod["liveness-probe"]
    port = int(flag(probe["args"], "health-port"))
    assert [p["containerPort"] for p in driver["ports"] if p["name"] == driver["livenessProbe"]["httpGet"]["port"]] == [port]
    if mode == "node":
        assert driver["args"].count("--node-id=$(NODE_NAME)") == 1
        assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in driver["env"]
        registration = flag(pod["node-driver-registrar"]["args"], "kubelet-registration-path")
        host_dir = served["volume"]["hostPath"]["path"]
        assert registration == host_dir + socket.removeprefix(served["mountPath"])
        assert host_dir == f"/var/lib/kubelet/plugins/{spec.DRIVER_NAME}"
        kubelet = mount_of(workload, driver, "/var/lib/kubelet/pods")
        assert kubelet["volume"]["hostPath"]["path"] == "/var/lib/kubelet" == kubelet["mountPath"]
    else:
        names = {c["name"] for c in sidecars}
        assert {"csi-provisioner", "csi-resizer", "csi-snapshotter", "liveness-probe"} <= names
        assert "--feature-gates=Topology=true" in pod["csi-provisioner"]["args"]


def test_storage_and_snapshot_classes_name_the_driver_and_valid_parameters() -> None:
    docs = documents()
    classes = [d for (kind, _), d in docs.items() if kind == "StorageClass"]
    assert len(classes) == 2
    for cls in classes:
        assert cls["provisioner"] == spec.DRIVER_NAME
        assert cls["allowVolumeExpansion"] is True                 # EXPAND_VOLUME is offered
        assert cls["volumeBindingMode"] == "WaitForFirstConsumer"  # volumes are node-local
        spec.parse_parameters({k: str(v) for k, v in cls["parameters"].items()})
    snapshots = [d for (kind, _), d in docs.items() if kind == "VolumeSnapshotClass"]
    assert [s["driver"] for s in snapshots] == [spec.DRIVER_NAME]


def test_the_image_runs_the_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["galleonfs-csi"] == "galleonfs.csi.main:main"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["galleonfs-csi"\]$', dockerfile, re.M)
    assert f"-t {IMAGE}:{galleonfs.__version__} ." in dockerfile
