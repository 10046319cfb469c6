"""caproute.routers"""
