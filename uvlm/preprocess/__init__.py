"""Whole-volume preprocessing for Stages 2 and 3."""
