"""Quality control of label maps: per-case montages, per-dataset class tables, agreement with a reference."""
