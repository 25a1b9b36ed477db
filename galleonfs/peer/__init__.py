"""The node-to-node API of cluster mode (generated code in ``v1``; served by ``galleonfs.rpc.peer``)."""
