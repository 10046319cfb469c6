"""caproute: LLM routing that learns from capability distributions.

Importing the package does no work: submodules are imported on demand.
"""

__version__ = "0.1.0"
