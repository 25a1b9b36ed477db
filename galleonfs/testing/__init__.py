"""Test doubles and fixtures that ship with the package (the trio habit).

* ``mount.MountedVolume``: mkfs + a real mount worker in a subprocess, and a checked unmount;
* ``faulty.FaultyStorage``: the engine's storage interface with a power switch;
* ``users.run_as``: run a function in a child process under another uid/gid;
* ``etcd.RunningEtcd``, ``cluster.RunningCluster``: a real etcd, and N daemons in cluster mode on it.
"""
