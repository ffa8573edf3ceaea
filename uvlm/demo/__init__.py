"""Synthetic chest-CT demo data in the exact CT-RATE layout."""
