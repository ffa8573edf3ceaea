"""U-VLM pipeline: 3D CT volumes to radiology reports (see README.md)."""
