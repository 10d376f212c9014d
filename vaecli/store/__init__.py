"""What lives on disk: checkpoints and their metadata, atomic file writes, the bundled models."""
