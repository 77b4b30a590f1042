"""Training: losses and the head trainer."""
