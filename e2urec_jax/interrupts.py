"""Ctrl-C and SIGTERM stop a command within seconds, at any moment, leaving a resumable workdir.

`install()` is the first thing `python -m e2urec_jax` does. SIGINT and SIGTERM then raise
KeyboardInterrupt in the main thread, and `main` prints the command's message (MESSAGE for the
commands that train, MESSAGES for the others: what is true of the workdir after the interrupt)
and exits 130 (143 for SIGTERM). Two things could keep a command running after the signal:

- Python swallows an exception raised inside a garbage-collector callback: a Ctrl-C that lands
  in JAX's (`Exception ignored in: <function _xla_gc_callback>`) is printed and dropped;
- a Python signal handler runs only between bytecodes, so it waits while the main thread is in
  a long C call (an XLA compile, a tokenizer, a device wait).

So the interrupt is raised once, and again only when it was swallowed: a hook on
`sys.unraisablehook` sees a KeyboardInterrupt that Python dropped (and keeps its traceback
off the screen), and a watchdog thread, woken through `signal.set_wakeup_fd` (written by the
C-level handler the moment the signal arrives, whatever the main thread is doing), raises it
again. Raising only then matters: a second interrupt landing while `main` unwinds the first
would escape it and end the process by the signal, without the message. GRACE_S after the
signal the watchdog ends the process itself (os._exit) with the same message and exit code,
for a main thread stuck in a long C call or an interrupt caught by a library's bare except.
Ending there is safe: every file a command writes is renamed into place when complete
(runtime.atomic_dir, orbax's checkpoints), so the last finished checkpoint and artifacts are
what the next run resumes from, as after kill -9 (tests/test_reliability_faults.py).
"""
import _thread
import contextlib
import os
import select
import signal
import sys
import threading
import time

MESSAGE = 'interrupted: the last checkpoint is kept; rerun the same command to resume'  # the training commands
# What is true after an interrupt of the commands that do not train (set_message: main, once the command is known).
MESSAGES = {
    'prepare': 'interrupted: data/ is replaced whole or not at all; rerun the same command to prepare it',
    'evaluate': 'interrupted: the previous report (results.json, results.md) is kept as it was; rerun evaluate to '
                'score again',
    'predict': 'interrupted: --output is written whole or not at all, and nothing else; rerun the same command',
    'export': 'interrupted: --output is replaced whole or not at all; rerun the same command',
    'forget': 'interrupted: the request resumes where it stopped; rerun the same command to finish it',
    'audit': 'interrupted: audit changes nothing; rerun it',
    'table': 'interrupted: nothing is left half-done (a report it was finishing is finished by the next command); rerun '
             'table',
    'bench': 'interrupted: bench.json is written whole at the end, so the previous one (if any) is kept; rerun bench',
}
EVALUATE_PUBLISHED = ('interrupted after the new report was decided: results.json and results.md are the new report, '
                      'whole')
GRACE_S = 4.0  # after the signal, the process ends by itself if it has not yet
RETRY_S = 0.1  # how often the watchdog looks for a swallowed interrupt to raise again
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {'signum': None, 'handled': False, 'installed': False, 'raised': False, 'again': False, 'told': False,
          'message': MESSAGE}


def set_message(message) -> None:
  """What an interrupt prints from now on: a line, or a function returning it when the interrupt comes
  (a command whose outcome changes as it runs: evaluate, once its new report is decided)."""
  _state['message'] = message


def message() -> str:
  m = _state['message']
  return m() if callable(m) else m


def exit_code() -> int:
  """128 + the signal that stopped the command (130 for Ctrl-C)."""
  return 128 + int(_state['signum'] or signal.SIGINT)


def handled() -> None:
  """`main` caught the interrupt: never raise it again; the process exits normally (or at the deadline)."""
  _state['handled'] = True


def tell() -> None:
  """The command's message (MESSAGE unless set_message changed it) on stderr, once."""
  if not _state.get('told'):
    _state['told'] = True
    print(message(), file=sys.stderr, flush=True)


def exit_now() -> None:
  """The message once, and the exit code now (os._exit, after flushing stdout and stderr). Not through
  the interpreter's shutdown: a second KeyboardInterrupt there (a library re-raising the first from
  its cleanup) made Python end itself by the signal (rc -2 after the message, ~1 in 10 tries).
  Safe for the same reason as the deadline: every file is renamed into place when complete."""
  handled()
  tell()
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(exit_code())


def _handler(signum, frame):
  _state['signum'] = _state['signum'] or signum
  if _state['handled'] or (_state['raised'] and not _state['again']):
    return  # on its way out already: a second interrupt would escape `main`'s handling of the first
  _state['raised'], _state['again'] = True, False
  raise KeyboardInterrupt


def _unraisable(previous):
  def hook(info):
    if issubclass(info.exc_type, KeyboardInterrupt) and not _state['handled']:
      _state['again'] = True  # dropped (a garbage-collector callback): the watchdog raises it again
      return
    previous(info)
  return hook


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
    if _state['again'] and not _state['handled'] and threading.main_thread().is_alive():
      _thread.interrupt_main(_state['signum'] or signal.SIGINT)
  if not _state['handled']:
    with contextlib.suppress(Exception):  # the process ends either way
      tell()
  os._exit(exit_code())


def install() -> None:
  """SIGINT/SIGTERM -> KeyboardInterrupt, with the hook and watchdog above. Idempotent; main thread only."""
  if _state['installed'] or threading.current_thread() is not threading.main_thread():
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  for signum in SIGNALS:
    signal.signal(signum, _handler)
  sys.unraisablehook = _unraisable(sys.unraisablehook)
  threading.Thread(target=_watch, args=(read_fd,), name='interrupt-watchdog', daemon=True).start()
  _state['installed'] = True
