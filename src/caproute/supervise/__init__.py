"""caproute.supervise"""
