"""Deployment: ONNX export, inference backends, benchmarks, `predict` and `serve`. Imports only the core layer."""
