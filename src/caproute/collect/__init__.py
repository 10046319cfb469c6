"""caproute.collect"""
