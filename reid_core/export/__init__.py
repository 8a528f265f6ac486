"""Export trained models for use outside PyTorch (ONNX, checked with onnxruntime).

Chapters: ``notebooks/06_your_own_images.py`` (``reid export``).
"""

from reid_core.export.onnx_export import EmbeddingGraph, OnnxExportReport, OnnxMismatchError, export_onnx

__all__ = ["EmbeddingGraph", "OnnxExportReport", "OnnxMismatchError", "export_onnx"]
