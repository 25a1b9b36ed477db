"""Generated gRPC code for the galleonfs.v1 API (from proto/; see galleonfs.rpc.codegen)."""
