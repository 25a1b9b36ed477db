"""CSI Identity: who the plugin is, what it offers, whether it is ready.

Probe is ready when galleond answers its health check as SERVING (it has restored its
mounts), not ready (initialising) while a reachable galleond is still restoring them, and
UNAVAILABLE, with the reason, when galleond does not answer at all.
"""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from .. import __version__
from ..errors import Unavailable
from .service import Backend, rpc
from .spec import DRIVER_NAME, CsiError
from .v1 import csi_pb2, csi_pb2_grpc

Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion


class Identity(csi_pb2_grpc.IdentityServicer):
    def __init__(self, backend: Backend, *, controller: bool) -> None:
        self.backend = backend
        self.controller = controller

    @rpc
    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                      context: grpc.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=__version__)

    @rpc
    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              context: grpc.ServicerContext) -> csi_pb2.GetPluginCapabilitiesResponse:
        caps = [csi_pb2.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS)),
                # galleond grows a volume while mounted, and df sees it at once.
                csi_pb2.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE))]
        if self.controller:
            caps.insert(0, csi_pb2.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE)))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc
    def Probe(self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext) -> csi_pb2.ProbeResponse:
        if self.backend.client.serving():
            return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
        try:
            self.backend.client.node_status()
        except Unavailable:
            raise CsiError("UNAVAILABLE", f"galleond at {self.backend.address} does not answer; "
                                          f"is it running?") from None
        # Reachable but not SERVING yet: it is restoring its mounts. Initialising, not
        # unhealthy: ready false, so the liveness probe does not restart the driver for it.
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=False))
