"""The backup repository (galleonfs.backup) against a real directory and a real S3 server."""
