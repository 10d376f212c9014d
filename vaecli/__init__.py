"""vaecli: train Variational Autoencoders on images and use them from the shell."""

__version__ = "0.1.0"
