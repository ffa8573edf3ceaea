"""U-VLM pipeline."""
