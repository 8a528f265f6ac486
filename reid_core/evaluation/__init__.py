"""reid_core.evaluation (public names are wired here at integration)."""
