"""The model service: an HTTP API (FastAPI under uvicorn) in front of the in-process engines.

``samed serve`` starts it; :mod:`samed.client` talks to it. This package's ``__init__`` imports nothing heavy, so
the torch-free client can import :mod:`samed.service.wire` (the shared wire format) inside 3D Slicer.

Modules: ``wire`` (formats), ``config`` (limits), ``auth`` (token, exposure), ``limits`` (body size),
``registry`` (models and the shared embedding cache), ``jobs`` (propagation jobs), ``schemas`` (JSON bodies),
``app`` (routes), ``server`` (start uvicorn).
"""
