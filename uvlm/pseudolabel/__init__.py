"""Anatomy pseudo-labelers: TotalSegmentator, any nnU-Net v2 model folder, a classical CPU labeler."""
