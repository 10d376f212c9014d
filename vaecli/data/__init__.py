"""Datasets and image files: the registry, torchvision and folder sources, the private cache, PNG I/O."""
