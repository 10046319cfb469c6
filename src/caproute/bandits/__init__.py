"""caproute.bandits"""
