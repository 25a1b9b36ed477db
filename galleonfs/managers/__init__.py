"""The managers: volumes, snapshots and clones, QoS, storage classes, access, node status.

The daemon's state and rules, on its trio thread. Below the RPC layer (which translates and
calls them) and above ``volops`` (the volume operations, online or offline) and
``workers`` (mount workers and mount points), which they are handed or call; never an
import of ``rpc`` or ``node``.
"""
