"""caproute.features"""
