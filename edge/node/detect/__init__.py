"""Detectors: vehicles and plates with onnxruntime."""
