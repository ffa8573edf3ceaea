"""The three training stages and their shared machinery."""
