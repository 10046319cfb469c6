"""Former home of the atomic writers, now :mod:`caproute.core.atomic` (kept as an alias for
existing imports; new code imports :mod:`caproute.core.atomic`)."""

from caproute.core.atomic import *  # noqa: F401,F403

