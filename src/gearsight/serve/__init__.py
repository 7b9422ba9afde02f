"""Real-time scoring over HTTP: ONNX Runtime behind FastAPI, no torch in the process.

Modules, in request order: guards (API key, body limit) -> app (routes wiring) -> routes / v2
(endpoints) -> parse (JSON bodies -> tensors) -> preprocess (image -> model input) -> engine and
batching (threads, dynamic batches) -> model (ONNX Runtime session). metrics counts all of it.
Start one with ``gearsight serve MODEL`` or ``gearsight.serve.app.create_app``.
"""
