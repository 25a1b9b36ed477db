"""POSIX semantics over the engine (``Vfs``); testable without a kernel."""
