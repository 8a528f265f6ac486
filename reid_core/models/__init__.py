"""reid_core.models (public names are wired here at integration)."""
