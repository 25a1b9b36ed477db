"""galleond, the node daemon: config, supervisor of mount workers, gRPC edge, catalog."""
