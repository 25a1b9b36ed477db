"""The audit log: who changed what through the API, in a hash chain (DESIGN §6, issue 6).

``chain`` seals and checks records (pure functions, no I/O); ``log`` appends them to one
file under the data directory and reads them back; ``peer`` finds who is on the other end
of a unix socket. The gRPC side (the interceptor that appends, the AuditService) lives in
``galleonfs.rpc.audit``: this package imports no grpc.
"""
