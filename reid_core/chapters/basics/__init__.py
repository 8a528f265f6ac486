"""Chapter 01, Re-ID basics and the strong baseline: its experiment (``experiment``).

Notebook: ``notebooks/01_reid_basics.py``.
"""

from reid_core.chapters.basics.experiment import ARMS, load_chapter_data, source_for, train_baseline_arm

__all__ = ["ARMS", "load_chapter_data", "source_for", "train_baseline_arm"]
