"""A stand-in for `python -m e2urec_jax` (tpu/tests/run_fake.sh): writes one resume
"checkpoint" folder per step into the workdir, so the tests can see runs resume."""
import os
import sys
import time

args = sys.argv[1:]
workdir = next(a.split('=', 1)[1] for a in args if a.startswith('--workdir='))
ckpt = os.path.join(workdir, 'phases', 'p', 'ckpt')
os.makedirs(ckpt, exist_ok=True)
with open(os.path.join(workdir, 'config.json'), 'w') as f:
  f.write('{}')
start = len(os.listdir(ckpt))
print('fake e2urec_jax', args, 'E2UREC_DISTRIBUTED=' + os.environ.get('E2UREC_DISTRIBUTED', ''),
      'MYVAR=' + os.environ.get('MYVAR', ''), 'start=%d' % start, flush=True)
for step in range(start, start + int(os.environ.get('STEPS', '2'))):
  with open(os.path.join(workdir, '.tmp_save'), 'w') as f:
    f.write('temporary')
  time.sleep(float(os.environ.get('SLEEP', '0.1')))
  os.makedirs(os.path.join(ckpt, str(step)))
  print('step', step, flush=True)
with open(os.path.join(workdir, 'results.md'), 'w') as f:
  f.write('| method |\n')
sys.exit(int(os.environ.get('RC', '0')))
