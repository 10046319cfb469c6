"""Import every router module so that each registers itself (see routers/base.py: register)."""

from caproute.routers import avengerspro as _avengerspro  # noqa: F401
from caproute.routers import baselines as _baselines  # noqa: F401
from caproute.routers import embedllm as _embedllm  # noqa: F401
from caproute.routers import graphrouter as _graphrouter  # noqa: F401
from caproute.routers import knn as _knn  # noqa: F401
from caproute.routers import metarouter as _metarouter  # noqa: F401
from caproute.routers import mf as _mf  # noqa: F401
from caproute.routers import mirt as _mirt  # noqa: F401
from caproute.routers import mlp as _mlp  # noqa: F401
from caproute.routers import rmsoftmax as _rmsoftmax  # noqa: F401
