"""The terminal: console output, progress lines, shell completion."""
