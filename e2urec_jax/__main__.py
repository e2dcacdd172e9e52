"""`python -m e2urec_jax`: Ctrl-C and SIGTERM are handled from the first moment (interrupts.py)."""
import sys

from e2urec_jax import interrupts

interrupts.install()
try:
  from e2urec_jax.main import run_cli
except KeyboardInterrupt:  # while the libraries load
  interrupts.handled()
  print(interrupts.MESSAGE, file=sys.stderr, flush=True)
  sys.exit(interrupts.exit_code())

run_cli()
