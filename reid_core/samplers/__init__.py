"""reid_core.samplers (public names are wired here at integration)."""
