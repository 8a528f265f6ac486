"""reid_core.data (public names are wired here at integration)."""
