"""caproute.data"""
