"""What a trained model tells: latent codes, scores and out-of-distribution detection, projections, and the
lossless codecs its likelihood is measured against."""
