"""The ground floor: mechanisms every caproute package may use and that import none of them.

- :mod:`~caproute.core.http`: the HTTP wire (a lean keep-alive transport for httpx, per-request
  deadlines, capped response bodies) shared by the collector's client and the proxy's backends.
- :mod:`~caproute.core.runtime`: the parallel map (local processes or Ray) and the one progress
  reporter every long loop uses.
- :mod:`~caproute.core.device`: which torch device to run on.
- :mod:`~caproute.core.ray_connect`: connecting to Ray.
- :mod:`~caproute.core.atomic`: atomic files and folders (the only place that renames).
- :mod:`~caproute.core.artifact`: versioned, checksummed artifact folders (routers, encoders,
  policies, pipelines).
- :mod:`~caproute.core.paths`: the cache-directory rule.
- :mod:`~caproute.core.figures`: the one matplotlib set-up and figure writer.
- :mod:`~caproute.core.configfile`: YAML config files and ``NAME=VALUE`` pairs, one error format.

Only :mod:`caproute.errors` (the error types) is imported from outside this package
(tests/test_architecture.py checks it).
"""
