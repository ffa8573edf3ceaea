"""Report tokenisation (BPE trained on the training split)."""
