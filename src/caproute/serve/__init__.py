"""An OpenAI-compatible routing proxy in front of a model pool (issue 5), with calibrated policies,
durable feedback and an online dueling mode (issue 6, item 6).

Modules (one concept each; nothing here does work at import time):

- :mod:`~caproute.serve.config`: :class:`ServeConfig` (what ``caproute serve`` runs with).
- :mod:`~caproute.serve.naming`: the ``model`` field grammar (``caproute/<router>@budget:lambda=..``).
- :mod:`~caproute.serve.conversation`: routing text of a chat, sticky conversations.
- :mod:`~caproute.serve.calibrate`: fit lambda to a cost / share / quality target (pure numpy),
  the versioned policy file.
- :mod:`~caproute.serve.drift`: live traffic against the calibration.
- :mod:`~caproute.serve.feedback`: durable SQLite store of responses and feedback.
- :mod:`~caproute.serve.auth`: hashed API keys.
- :mod:`~caproute.serve.metrics`: the per-app Prometheus registry.
- :mod:`~caproute.serve.backends`: httpx client to the pool, failure classification.
- :mod:`~caproute.serve.state`: :class:`ServeState`, what a running app holds; per-request lambda/beta.
- :mod:`~caproute.serve.routed_chat`: :class:`RoutedChat`, one routed chat (decide, the one attempt
  loop with fallback for JSON and streams, accounting, registration for feedback).
- :mod:`~caproute.serve.duel_chat`: the online duel mode; :mod:`~caproute.serve.feedback_api`:
  ``/v1/feedback``; :mod:`~caproute.serve.gateway`: auth, body limit, request metrics (ASGI).
- :mod:`~caproute.serve.app`: :func:`create_app` (FastAPI routes only); :mod:`~caproute.serve.server`: uvicorn.
"""
