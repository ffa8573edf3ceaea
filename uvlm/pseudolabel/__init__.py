"""Anatomy pseudo-labelers: TotalSegmentator, any nnU-Net v2 model folder, a classical CPU labeler."""

# Backends whose jobs request a GPU on the cluster (the classical and folder ones run on CPU).
GPU_BACKENDS = ("totalsegmentator", "nnunet")
