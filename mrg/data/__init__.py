"""Data: preparing datasets into manifests, cleaning report text and loading studies for training."""
