"""Import every router module so that each registers itself (see routers/base.py: register)."""

from caproute.routers import baselines as _baselines  # noqa: F401
from caproute.routers import knn as _knn  # noqa: F401
