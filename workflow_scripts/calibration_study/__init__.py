"""The INT8 calibration study: presets and variants, per-layer sensitivity, the int8-auto rescue search,
and the rescue report (ONNX Runtime's calibrator and OpenVINO's NNCF do the quantizing, in ``backends/``).
"""
