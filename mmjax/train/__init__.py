"""Training: state, optimizer, the jitted step and the loop."""
