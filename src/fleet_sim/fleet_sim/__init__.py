"""Simulated fleet: robots on the real agent intake, fault injection, node sets and the demo scenario."""
