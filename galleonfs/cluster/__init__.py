"""Cluster mode (DESIGN §4): etcd for membership, placement and per-volume epochs.

``etcd`` is the only module that talks to etcd; ``membership`` registers this node and reads
the others; ``placement`` is a pure function; ``epochs`` holds a volume's primary lease and
epoch. Replication (journal shipping) is not built yet: see docs/design.md, "Cluster mode".
"""
