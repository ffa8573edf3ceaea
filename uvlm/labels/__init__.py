"""Label maps (YAML) and merging of anatomy and lesion masks into granularities."""
