"""caproute.evaluate"""
