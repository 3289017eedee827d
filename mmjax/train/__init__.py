"""Training: the jitted step, gradient accumulation, the loop and its guards."""
