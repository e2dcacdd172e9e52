"""Ctrl-C and SIGTERM stop a command within seconds, at any moment, leaving a resumable workdir.

`install()` is the first thing `python -m e2urec_jax` does. SIGINT and SIGTERM then raise
KeyboardInterrupt in the main thread, and `main` prints MESSAGE and exits 130 (143 for
SIGTERM). Two things could keep a command running after the signal:

- Python swallows an exception raised inside a garbage-collector callback: a Ctrl-C that lands
  in JAX's (`Exception ignored in: <function _xla_gc_callback>`) is printed and dropped;
- a Python signal handler runs only between bytecodes, so it waits while the main thread is in
  a long C call (an XLA compile, a tokenizer, a device wait).

So a watchdog thread, woken through `signal.set_wakeup_fd` (written by the C-level handler the
moment the signal arrives, whatever the main thread is doing), raises the interrupt again
every RETRY_S until `main` reports it handled, and GRACE_S after the signal ends the process
itself (os._exit) with the same message and exit code. Ending there is safe: every file a
command writes is renamed into place when complete (runtime.atomic_dir, orbax's checkpoints),
so the last finished checkpoint and artifacts are what the next run resumes from, as after
kill -9 (tests/test_reliability_faults.py).
"""
import _thread
import os
import select
import signal
import sys
import threading
import time

MESSAGE = 'interrupted: the last checkpoint is kept; rerun the same command to resume'
GRACE_S = 4.0  # after the signal, the process ends by itself if it has not yet
RETRY_S = 0.5  # the interrupt is raised again this often until handled (a swallowed one)
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {'signum': None, 'handled': False, 'installed': False}


def exit_code() -> int:
  """128 + the signal that stopped the command (130 for Ctrl-C)."""
  return 128 + int(_state['signum'] or signal.SIGINT)


def handled() -> None:
  """`main` caught the interrupt: stop raising it; the process exits normally (or at the deadline)."""
  _state['handled'] = True


def _handler(signum, frame):
  if _state['handled']:
    return  # already on its way out: let it finish
  _state['signum'] = _state['signum'] or signum
  raise KeyboardInterrupt


def _watch(read_fd: int) -> None:
  while _state['signum'] is None:  # set by the Python handler, or read off the wakeup fd
    ready, _, _ = select.select([read_fd], [], [], 0.25)
    if ready:
      got = [b for b in os.read(read_fd, 64) if b in SIGNALS]
      if got:
        _state['signum'] = _state['signum'] or got[0]
  deadline = time.monotonic() + GRACE_S
  while time.monotonic() < deadline:
    time.sleep(RETRY_S)
    if not _state['handled'] and threading.main_thread().is_alive():
      _thread.interrupt_main(_state['signum'] or signal.SIGINT)
  if not _state['handled']:
    try:
      sys.stderr.write(MESSAGE + '\n')
      sys.stderr.flush()
    except Exception:  # noqa: BLE001 (the process ends either way)
      pass
  os._exit(exit_code())


def install() -> None:
  """SIGINT/SIGTERM -> KeyboardInterrupt, with the watchdog above. Idempotent; main thread only."""
  if _state['installed'] or threading.current_thread() is not threading.main_thread():
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  for signum in SIGNALS:
    signal.signal(signum, _handler)
  threading.Thread(target=_watch, args=(read_fd,), name='interrupt-watchdog', daemon=True).start()
  _state['installed'] = True
