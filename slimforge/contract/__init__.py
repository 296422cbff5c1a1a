"""The HTTP contract of the slimforge API: request and response schemas and webhook signing.

Pydantic (and the standard library) only: the API (``slimforge.app``), the worker
(``slimforge.worker``) and the SDK (``slimforge.client``) all import these modules, and the SDK
imports nothing else of the server. Method parameters come from the torch-free configs of
``slimforge.compression``. One module per domain: ``jobs`` (+ ``texts``, its calibration and
evaluation sections, and ``inputs``, what request bodies share), ``artifacts``, ``methods``,
``webhooks`` (+ ``signing``), ``keys`` (+ ``scopes``), ``credentials``.
"""
