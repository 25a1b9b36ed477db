"""Generated gRPC code for the node-to-node galleonfs.peer.v1 API (from proto/galleonfs/peer/v1/; see galleonfs.rpc.codegen)."""
