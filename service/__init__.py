"""Serving: BentoML + ONNX Runtime, no torch. The service is `service.service:DCGAN`.

Nothing is imported here, so `import service.metrics` (say) stays light.
"""
