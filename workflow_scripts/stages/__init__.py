"""The pipeline stages one rule each runs: train, export to ONNX, build an engine, check it, evaluate accuracy,
measure latency, and the interleaved latency runoff.
"""
