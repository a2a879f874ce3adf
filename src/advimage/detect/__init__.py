"""Steganalysis detectors (thesis §8.4)."""
