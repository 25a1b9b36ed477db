"""galleond, the node daemon: its configuration, its start and stop, the catalog's guard and
rebuild. It builds the managers and the gRPC edge and hands them to each other."""
