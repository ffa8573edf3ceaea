"""Label extraction from report text, metrics and result tables."""
