"""caproute.causal"""
