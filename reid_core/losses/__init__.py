"""reid_core.losses (public names are wired here at integration)."""
