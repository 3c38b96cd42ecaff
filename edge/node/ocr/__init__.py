"""Plate text recognisers."""
