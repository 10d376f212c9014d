"""Training and evaluation loops: epochs, optimizer state, test losses, the fitted prior, torchrun."""
