"""`python tests/fault_cli.py <command> ...`: the CLI with the fault hooks of the E2UREC_TEST_*
variables (tests/fault_hooks.py) passed in as a callback, and E2UREC_TEST_KILL_IN's function patched
(to send E2UREC_TEST_KILL_SIGNAL, default KILL)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from fault_hooks import KILL_IN_ENV, KILL_SIGNAL_ENV, Faults, install_kill_in  # noqa: E402

from e2urec_jax.main import run_cli  # noqa: E402

if __name__ == '__main__':
  install_kill_in(os.environ.get(KILL_IN_ENV), os.environ.get(KILL_SIGNAL_ENV))
  run_cli(callbacks=[Faults.from_env()])
