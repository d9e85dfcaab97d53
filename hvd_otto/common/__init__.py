"""Shared by driver and ranks: errors, settings and their defaults, the run folder, the rank
configuration, filesystem access, device choice and model building. Imports nothing above it."""
