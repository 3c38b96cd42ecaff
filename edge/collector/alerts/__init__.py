"""Alerts out: hits to the agencies' own systems by signed webhook and by e-mail."""
