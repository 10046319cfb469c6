"""caproute inside other gateways: each module adapts caproute's routing to one host.

- :mod:`caproute.integrations.litellm`: a LiteLLM routing plugin (``pip install
  'caproute[litellm]'``), for LiteLLM's SDK ``Router(plugins=[...])`` and its proxy's
  ``router_settings.plugins``.

This floor sits above ``serve`` (it reuses the proxy's decision batcher, fallback order, feedback
store and request log) and below ``cli``; nothing in caproute imports it.
"""
