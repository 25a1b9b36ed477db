"""The FUSE layer: the pyfuse3 adapter (the only ``import pyfuse3``) and the mount worker."""
