"""Models: the Keras zoo and its preprocessing by family, EfficientNet-Lite built from ImageNet weights read
without pickle, and the user's own Keras checkpoints and ONNX files.
"""
