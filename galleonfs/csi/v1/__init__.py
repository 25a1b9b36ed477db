"""Generated gRPC code for the CSI specification's csi.v1 (from proto/csi/v1/csi.proto; see galleonfs.rpc.codegen)."""
