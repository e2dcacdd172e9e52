"""What every method and the evaluation build on: the run context, mesh, jitted steps, the phase
loop and runner, inference, resume checkpoints and published artifacts."""
