from e2urec_jax.main import run_cli

run_cli()
