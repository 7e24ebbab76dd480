"""Faithful simulators of the providers, served over real HTTP so tests and demos never need the real services."""
