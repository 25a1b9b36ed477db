"""Command-line tools: ``galleonfs`` (standalone) and, later, ``galleonctl``."""
