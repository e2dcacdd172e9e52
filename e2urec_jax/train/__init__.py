"""Training machinery shared by every method: mesh, steps, loop, checkpoints, artifacts."""
