"""Model parts: the nnU-Net encoder, the Stage 2 head, the Stage 3 decoder and injection."""
