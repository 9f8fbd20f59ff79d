"""edgeptq: post-training quantization characterization workflow.

Importing this package never imports TensorFlow, ONNX Runtime or TensorRT; the modules
that need them import them inside the functions that use them.
"""

__version__ = "0.1.0"
