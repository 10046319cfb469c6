"""Import every router module so that each registers itself (see routers/base.py: register)."""
