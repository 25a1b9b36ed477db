"""The metadata store: the only module that imports ``lmdb`` (DESIGN §5)."""
