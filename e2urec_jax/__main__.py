"""`python -m e2urec_jax`: Ctrl-C and SIGTERM are handled from the first moment (interrupts.py)."""
from e2urec_jax import interrupts

interrupts.install()
try:
  from e2urec_jax.main import run_cli  # heavy: after install(), so Ctrl-C while it loads is handled
  run_cli()
except KeyboardInterrupt:  # while the libraries load, or a second one on the way out of a handled one
  interrupts.exit_now()
