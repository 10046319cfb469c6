"""caproute.serve"""
