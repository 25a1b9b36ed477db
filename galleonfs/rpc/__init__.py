"""The RPC layer: the only place that imports ``grpc`` (DESIGN §5).

``bridge`` crosses from grpcio's thread pool into the daemon's trio loop; ``status`` maps
``GalleonError`` to gRPC status codes in one interceptor; ``services`` are thin servicers;
``server`` assembles them with health checking and reflection; ``client`` is what
``galleonctl`` (and tests) use. ``galleonfs.v1`` holds the generated code.
"""
