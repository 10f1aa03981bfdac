"""Everything that needs torch: data, losses, the training loop, checkpoints, export."""
