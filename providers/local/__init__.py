"""In-process backends: the ONNX model, its micro-batcher, and the bundled model files."""
