"""Pictures: matplotlib figures, the training report, snapshots, the HTML tour."""
