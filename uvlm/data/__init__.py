"""Dataset ingest (CT-RATE) and the manifest schema; torch datasets for training."""
