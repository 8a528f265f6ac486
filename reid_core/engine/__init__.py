"""reid_core.engine (public names are wired here at integration)."""
