"""Approximate nearest-neighbour search over exported descriptors (ScaNN), tuned against exact search."""
