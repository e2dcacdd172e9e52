"""End to end on the shrunken demo: one shared `run`, then what a user reads off it.

Every test of the shared run (conftest.demo_run) lives in this file: the suite's workers take a
file each (pytest-xdist, --dist loadfile), so the run is built once."""
import os
import re

import numpy as np
import pytest

from conftest import REPO, shrink

pytestmark = pytest.mark.slow


def test_run_writes_report_with_schema(demo_run):
  from e2urec_jax import runtime
  from e2urec_jax.eval import report
  _, workdir = demo_run
  results = runtime.read_json(os.path.join(workdir, 'results.json'))
  expected = ['original', 'retrain', 'e2urec', 'neggrad', 'badt', 'sisa', 'receraser', 'ga', 'npo']
  assert report.validate_results(results, required_methods=expected) == []
  for name in ('results.md', 'distance_vs_time.png', 'test_auc.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, 'test_auc.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  table = open(os.path.join(workdir, 'results.md')).read()
  for name in expected:
    assert f'`{name}`' in table
  assert results['noise_floor']['jsd'] > 0
  # The MIA suite and the fairness split, for every method (the reference attack: the noise floor's retrain).
  assert results['mia']['reference_model'] == 'retrain_seed2' and results['mia']['members'] > 0
  for name in expected:
    assert all(0.0 <= results['methods'][name]['mia'][a] <= 1.0 for a in report.MIA_KEYS), name
    assert results['methods'][name]['fairness']['auc_active'] is not None, name
  assert results['methods']['original']['fairness']['gap_change'] == 0.0
  assert results['fairness']['active_test_samples'] > 0 and results['fairness']['inactive_test_samples'] > 0
  assert '## Membership inference' in table and '## Fairness' in table


def test_every_seed_runs_the_whole_experiment(demo_run):
  """configs/demo.py:test runs seeds 42 and 43: each its own forget set, original, retrain, noise
  floor and repeated methods; the other methods on the first seed; one combined report."""
  from e2urec_jax import runtime
  from e2urec_jax.data import load_tokenized
  from e2urec_jax.data.protocol import reseeded
  from e2urec_jax.train.paths import seed_paths
  config, workdir = demo_run
  results = runtime.read_json(os.path.join(workdir, 'results.json'))
  assert results['seeds'] == [42, 43]
  methods = results['methods']
  for name in ('original', 'retrain', 'e2urec', 'badt'):
    assert [row['seed'] for row in methods[name]['seeds']] == [42, 43], name
  for name in ('neggrad', 'sisa'):
    assert 'seeds' not in methods[name] and methods[name]['seed'] == 42
  assert [f['seed'] for f in results['noise_floor']['seeds']] == [42, 43]
  other = seed_paths(workdir, 43)
  for name in ('original', 'retrain', 'retrain_seed2', 'e2urec', 'badt'):
    assert os.path.isdir(other.model_dir(name)), name
  assert not os.path.exists(other.model_dir('sisa')) and not os.path.exists(other.model_dir('neggrad'))
  data = load_tokenized(workdir)  # the first seed's forget set is the prepared one; 43 draws its own
  first = reseeded(data, config.data, 42)
  np.testing.assert_array_equal(first.splits['train'].is_forget, data.splits['train'].is_forget)
  assert not np.array_equal(reseeded(data, config.data, 43).splits['train'].is_forget,
                            data.splits['train'].is_forget)
  summary = results['summary']
  assert summary['comparisons']['badt']['sym_kl']['n'] == 2 and summary['comparisons']['original']['sym_kl']['n'] == 2
  assert 'neggrad' not in summary['comparisons']  # one seed: nothing to pair
  mechanism = methods['e2urec']['mechanism']
  assert mechanism['original']['sym_kl'] == pytest.approx(methods['original']['forget']['sym_kl'], rel=1e-6)
  assert mechanism['kd_to_teacher']['end'] < mechanism['kd_to_teacher']['start']  # it learnt its teacher
  for seed in ('42', '43'):
    points = results['trajectories'][seed]['e2urec']
    assert [p['step'] for p in points] == [100]
  assert points[-1]['sym_kl'] == pytest.approx(methods['e2urec']['seeds'][1]['forget']['sym_kl'], rel=1e-6)
  table = open(os.path.join(workdir, 'results.md')).read()
  assert '## E2URec against each method, paired over seeds' in table and '`e2urec` (2 seeds)' in table
  with open(os.path.join(workdir, 'trajectories.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_the_story_holds_on_the_seed_means(demo_run):
  """What held on every seed we ran, asserted on the two seeds' means with margin. Per-seed
  values over seeds 42-45 of this variant (42-43 also with the project's XLA flags off) and 42-44
  of the full demo: the original's forget AUC
  above retrain's by 0.11-0.30; E2URec's symKL 0.64-1.19x the original's; Bad-T's forget AUC below
  retrain's by 0.11-0.44 (overshoot); E2URec's test AUC within -0.035..+0.024 of the
  original's, its forget AUC below the original's by 0.02-0.15. Not asserted, because it does
  not hold on every seed: E2URec closer to retrain than the original, than Bad-T or than NegGrad
  (NegGrad diverges on most seeds, 0.75-5.3, but ended at 0.165 on one, below E2URec's 0.174)."""
  from e2urec_jax import runtime
  _, workdir = demo_run
  results = runtime.read_json(os.path.join(workdir, 'results.json'))
  methods = results['methods']
  assert methods['original']['test']['auc'] >= 0.6
  assert methods['retrain']['forget']['jsd'] == 0
  mean = lambda name, group, key: np.mean([row[group][key] for row in methods[name]['seeds']])  # noqa: E731
  assert mean('original', 'forget', 'auc') > mean('retrain', 'forget', 'auc') + 0.08  # it memorised them
  assert mean('e2urec', 'forget', 'sym_kl') < 1.5 * mean('original', 'forget', 'sym_kl')  # does no harm
  assert mean('badt', 'forget', 'auc') < mean('retrain', 'forget', 'auc') - 0.08  # Bad-T overshoots
  assert mean('e2urec', 'test', 'auc') > mean('original', 'test', 'auc') - 0.06
  assert mean('e2urec', 'forget', 'auc') < mean('original', 'forget', 'auc')
  # E2URec trains adapters only: far fewer parameters than the full-parameter baselines.
  assert methods['e2urec']['trainable_params'] < methods['neggrad']['trainable_params']
  assert methods['e2urec']['checkpoint_bytes'] < methods['neggrad']['checkpoint_bytes']


def test_published_adapters_hold_no_base_weight(demo_run):
  from safetensors.numpy import load_file
  from e2urec_jax import runtime
  from e2urec_jax.train import artifacts
  _, workdir = demo_run
  folder = os.path.join(workdir, 'models', 'e2urec')
  tensors = load_file(os.path.join(folder, artifacts.ADAPTERS_FILE))
  assert tensors and all(k.endswith(('lora_a', 'lora_b')) for k in tensors)
  meta = runtime.read_json(os.path.join(folder, artifacts.ADAPTER_META))
  # The base the adapters name is the original model, unchanged since they were trained.
  assert meta['base_sha256'] == artifacts.content_hash(os.path.join(workdir, 'models', 'original'))
  base_params = sum(np.prod(v.shape) for v in load_file(
      os.path.join(workdir, 'models', 'original', 'model.safetensors')).values())
  assert sum(v.size for v in tensors.values()) < base_params


def test_rerun_resumes_without_training(demo_run, capsys):
  """Every phase is done: a second `run` only re-evaluates, and the models are not rewritten."""
  from e2urec_jax.experiment import run_experiment
  config, workdir = demo_run
  model_file = os.path.join(workdir, 'models', 'original', 'model.safetensors')
  before = os.path.getmtime(model_file)
  run_experiment(config, workdir)
  assert os.path.getmtime(model_file) == before
  assert 'run finished' in capsys.readouterr().out


def test_predict_scores_pairs_and_rejects_unknown_ids(demo_run, tmp_path):
  import pandas as pd
  from e2urec_jax.errors import UserError
  from e2urec_jax.eval.predict import predict
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  config, workdir = demo_run
  test = pd.read_parquet(os.path.join(workdir, 'data', 'test.parquet'))
  pairs = pd.DataFrame({'user_id': test['user_key'][:5].astype(str), 'item_id': test['item_key'][:5].astype(str)})
  ctx = open_run(config, run_paths(workdir))
  p_yes = predict(ctx, 'e2urec', pairs)
  assert p_yes.shape == (5,) and np.all((p_yes > 0) & (p_yes < 1))
  with pytest.raises(UserError, match='not in the synthetic data'):
    predict(ctx, 'e2urec', pd.DataFrame({'user_id': ['999999'], 'item_id': pairs['item_id'][:1]}))
  from e2urec_jax.eval.predict import read_pairs
  bad = tmp_path / 'pairs.csv'  # an unknown id read from a file: the message names the file and line
  bad.write_text(f'user_id,item_id\n{pairs["user_id"][0]},{pairs["item_id"][0]}\n999999,{pairs["item_id"][0]}\n')
  with pytest.raises(UserError, match=re.escape(f"{bad} line 3: user_id '999999' not in the synthetic data")):
    predict(ctx, 'e2urec', read_pairs(str(bad)))


def test_export_writes_a_transformers_loadable_folder(demo_run, tmp_path):
  from e2urec_jax.eval.export import export_model
  from e2urec_jax.models import load_pretrained
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  config, workdir = demo_run
  out = export_model(open_run(config, run_paths(workdir)), 'e2urec', str(tmp_path / 'hf'))
  for name in ('config.json', 'model.safetensors', 'tokenizer.json'):
    assert os.path.exists(os.path.join(out, name))
  model, params, tokenizer = load_pretrained(out)
  assert tokenizer is not None and model.family == 't5'
  from e2urec_jax.errors import UserError
  with pytest.raises(UserError, match='inside the workdir'):  # it would replace the run's models folder
    export_model(open_run(config, run_paths(workdir)), 'e2urec', os.path.join(workdir, 'models'))
  assert os.path.exists(os.path.join(workdir, 'models', 'original', 'model.safetensors'))


def test_outputs_are_readable_as_the_umask_allows_not_owner_only(demo_run):
  """Results, models and their folders get the permissions a plain open()/makedirs would give,
  so a team sharing a workdir can read them (temp files are created owner-only)."""
  _, workdir = demo_run
  umask = os.umask(0)
  os.umask(umask)
  for name in ('results.json', 'results.md', 'test_auc.png', 'models/original/model.safetensors',
               'models/e2urec/adapters.safetensors'):
    assert os.stat(os.path.join(workdir, name)).st_mode & 0o777 == 0o666 & ~umask, name
  for name in ('models/original', 'models/e2urec'):
    assert os.stat(os.path.join(workdir, name)).st_mode & 0o777 == 0o777 & ~umask, name


def test_a_rerun_with_another_config_refuses_before_any_work(demo_run, tmp_path):
  """The run's phases were trained at batch 32: a rerun at 16 names the field and changes nothing."""
  import shutil
  from e2urec_jax.errors import UserError
  from e2urec_jax.experiment import run_experiment
  config, workdir = demo_run
  work = str(tmp_path / 'copy')
  shutil.copytree(workdir, work)
  changed = config.copy_and_resolve_references()
  changed.train.batch_size = 16
  before = sorted(os.listdir(os.path.join(work, 'models')))
  with pytest.raises(UserError, match=r'train\.batch_size 32 -> 16.*--restart=changed') as e:
    run_experiment(changed, work)
  assert '\n' not in str(e.value) and 'original' in str(e.value)
  assert sorted(os.listdir(os.path.join(work, 'models'))) == before


def test_a_restart_covers_every_seed_before_any_training(demo_run, tmp_path, monkeypatch):
  """A changed E2URec field: refused before any work; --restart=changed removes E2URec on every
  seed (not only the first, as the first multi-seed resume did), keeping what was not changed,
  and it is decided for all seeds before the first trains."""
  import shutil
  from e2urec_jax import experiment
  from e2urec_jax.errors import UserError
  from e2urec_jax.train.paths import run_paths, seed_paths
  config, workdir = demo_run
  work = str(tmp_path / 'copy')
  shutil.copytree(workdir, work)
  changed = config.copy_and_resolve_references()
  changed.unlearn.e2urec.w = 0.5
  layouts = (run_paths(work), seed_paths(work, 43))
  with pytest.raises(UserError, match=r'unlearn\.e2urec\.w 0\.6 -> 0\.5'):
    experiment.run_experiment(changed, work)
  assert all(os.path.isdir(p.model_dir('e2urec')) for p in layouts)

  class Trained(Exception):
    pass

  def first_training(*args, **kwargs):
    raise Trained
  monkeypatch.setattr(experiment, 'train_seed', first_training)
  with pytest.raises(Trained):
    experiment.run_experiment(changed, work, restart=('changed',))
  for layout in layouts:
    assert not os.path.exists(layout.model_dir('e2urec')) and not os.path.exists(layout.phase_dir('e2urec'))
    assert os.path.isdir(layout.model_dir('original')) and os.path.isdir(layout.model_dir('badt'))


def test_corrupt_artifacts_are_named_or_their_phase_repaired(demo_run, tmp_path, capsys, monkeypatch):
  """Token arrays: prepared again (the same data); adapters and full models: named on load, and the
  phase is trained again by `run` (runner.done drops the damaged model)."""
  import shutil
  from e2urec_jax import commands, resume, stamps
  from e2urec_jax.methods import runner as method_runner
  from e2urec_jax.methods import spec
  from e2urec_jax.train import fingerprint, runner
  config, workdir = demo_run
  work = str(tmp_path / 'copy')
  shutil.copytree(workdir, work)
  tokens = os.path.join(work, 'data', 'tokens', 'train', 'prompt_ids.npy')
  digest = resume.ensure_data(config, work).digest
  with open(tokens, 'r+b') as f:
    f.truncate(os.path.getsize(tokens) // 2)
  assert resume.ensure_data(config, work).digest == digest  # prepared again: the same arrays
  assert 'repair: ' + tokens + ' is corrupt' in capsys.readouterr().out
  adapters = os.path.join(work, 'models', 'e2urec', 'adapters.safetensors')
  with open(adapters, 'r+b') as f:
    f.seek(os.path.getsize(adapters) - 64)
    f.write(b'\xff' * 64)
  original = os.path.join(work, 'models', 'original', 'model.safetensors')
  with open(original, 'r+b') as f:
    f.truncate(1000)
  with pytest.raises(stamps.Corrupt, match='model.safetensors is corrupt: 1000 bytes where .* were written; '
                                           'rerun `run` on this workdir: it trains phase original again'):
    commands.evaluate(config, work, model='original')
  from e2urec_jax.eval import evaluate as evaluate_lib
  with monkeypatch.context() as patch:  # evaluating every model: the damaged one is named before any scoring
    patch.setattr(evaluate_lib, 'score', lambda *a, **k: pytest.fail('scored before the models were checked'))
    with pytest.raises(stamps.Corrupt, match='models/e2urec/adapters.safetensors is corrupt'):
      commands.evaluate(config, work)
  ctx = resume.prepare_run(config, work, 'run')
  section = method_runner.section_of(config, 'e2urec', ())
  rec = fingerprint.of_run(config, ctx.data.digest, fingerprint.METHOD, method='e2urec', section=section,
                           reads=spec.get('e2urec').reads, seed=config.seed)
  assert runner.done(ctx, 'e2urec', rec) is None and not os.path.exists(ctx.model_dir('e2urec'))
  assert f'repair: {adapters} is corrupt; training e2urec again' in capsys.readouterr().out
  rec = fingerprint.of_run(config, ctx.data.digest, fingerprint.RECIPE, seed=config.seed)
  assert runner.done(ctx, 'original', rec) is None and not os.path.exists(ctx.model_dir('original'))


def test_auto_stop_publishes_the_model_nearest_the_heldout_target(demo_run, tmp_path):
  """config.unlearn.auto: NegGrad stopped by the held-out membership signal publishes the model of
  the step the rule picks from the same checks (recorded beside it as a trajectory)."""
  import shutil
  from e2urec_jax import resume
  from e2urec_jax.eval import seed_report, trajectory
  from e2urec_jax.methods import runner
  from e2urec_jax.train import heldout, inference
  config, workdir = demo_run
  work = str(tmp_path / 'w')
  shutil.copytree(workdir, work)
  for name in ('e2urec', 'neggrad', 'badt', 'ga', 'npo'):  # trained without the rule: a rerun would refuse them
    shutil.rmtree(os.path.join(work, 'phases', name))
    shutil.rmtree(os.path.join(work, 'models', name))
  config = config.copy_and_resolve_references()
  config.unlearn.auto, config.unlearn.auto_every, config.unlearn.auto_patience = 'heldout_mia', 10, 1
  config.unlearn.neggrad.steps = 60
  name, every = 'neggrad[auto]', 10
  ctx = resume.prepare_run(config, work, 'unlearn', None)
  recorder = trajectory.TrajectoryRecorder([name], every, test_samples=64)
  stats = runner.run_method(ctx, 'neggrad', name=name, callbacks=(recorder,))
  points = trajectory.of_phase(ctx, name)
  assert [p['step'] for p in points] == sorted({*range(every, stats['steps'] + 1, every), stats['steps']})
  chosen = seed_report.auto_step(points)  # the after-the-fact rule over the same checks
  assert stats['auto'] == 'heldout_mia' and stats['best_step'] == chosen['step']
  assert stats['best_valid'] == pytest.approx(abs(chosen['heldout_mia_auc'] - 0.5), abs=1e-6)
  if stats['stopped_early']:  # the phase ran patience + 1 checks past its choice, not its configured steps
    assert stats['steps'] == stats['best_step'] + 2 * every < 60
  else:
    assert stats['steps'] == 60
  published = heldout.HeldoutRows(ctx).auc(ctx, inference.load_predictor(ctx, name))
  assert published == pytest.approx(chosen['heldout_mia_auc'], abs=1e-4)  # the chosen step's model, not the last


def test_colab_notebook_executes(demo_run, monkeypatch):
  """notebooks/e2urec_colab.ipynb runs top to bottom (nbclient, CPU) on the shared run: its `run`
  cell finds every phase finished, so it only re-evaluates; the install cell skips (the package
  is importable here) and the full-experiment cell stays off."""
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  _, workdir = demo_run
  monkeypatch.setenv('E2UREC_NOTEBOOK_CONFIG', 'configs/demo.py:test')
  monkeypatch.setenv('E2UREC_NOTEBOOK_WORKDIR', workdir)
  monkeypatch.setenv('E2UREC_NOTEBOOK_FLAGS', '--config.progress=false')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  nb = nbformat.read(os.path.join(REPO, 'notebooks', 'e2urec_colab.ipynb'), as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': REPO}}).execute()

  texts, images = [], 0
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'error':
        pytest.fail(f'cell failed: {out.get("ename")}: {out.get("evalue")}')
      texts.append(out.get('text', ''))
      data = out.get('data', {})
      texts.extend(str(v) for k, v in data.items() if k.startswith('text/'))
      images += 'image/png' in data
  text = '\n'.join(texts)
  assert 'skipping the install' in text
  assert 'run finished' in text  # the CLI ran (and found every phase done)
  assert '`e2urec`' in text and '`retrain`' in text  # the results table (Markdown)
  assert 'test AUC' in text  # the pandas summary
  assert images == 2  # distance_vs_time.png and test_auc.png
  assert 'skipped (set RUN_FULL_EXPERIMENT' in text


def test_shrunk_sequence_on_the_demo_run(demo_run):
  """Sequential requests (tests/test_sequence.py has the rest); last in this file, as it adds
  sequence/ to the shared workdir. Two requests on the shared run's original: each served by
  E2URec from the last one's merged model, one retrain after the last, the report written."""
  from e2urec_jax import config as config_lib, runtime, sequence
  config, workdir = demo_run
  c = shrink(config.copy_and_resolve_references(), steps=8, batch=8)
  for key in config.train:  # the run's recipe: the reference retrains are the original's (its fingerprint)
    c.train[key] = config.train[key]
  c.sequence.requests, c.sequence.retrain_every, c.sequence.methods = 2, 2, 'e2urec'
  config_lib.validate(c)
  sequence.run_sequence(c, workdir)
  out = runtime.read_json(os.path.join(workdir, 'sequence', 'sequence.json'))
  first, second = out['steps']
  assert not first['retrained'] and second['retrained'] and 'jsd' not in first['methods']['e2urec']['forget']
  assert second['cumulative_users'] == 2 * first['users'] and second['forget_samples'] > first['forget_samples']
  e2 = second['methods']['e2urec']
  assert e2['forget']['jsd'] > 0 and second['methods']['retrain']['forget']['jsd'] == 0
  assert e2['cumulative_time_s'] > e2['time_s'] > 0 and set(e2['mia']) == {
      'loss', 'confidence', 'entropy', 'modified_entropy', 'reference'}
  # Request 2 started from request 1's result, merged: its adapters name that merged folder as their base.
  meta = runtime.read_json(os.path.join(workdir, 'sequence', 'r2', 'e2urec', 'e2urec', 'model', 'adapter_config.json'))
  assert meta['base_dir'] == os.path.join(workdir, 'sequence', 'r1', 'e2urec', 'e2urec', 'model', 'merged')
  chain = out['chain']['e2urec']
  assert chain['adapters'] and len(chain['result_bytes_per_request']) == 2
  # Served merged or with both requests' adapters stacked on the original: the same model.
  assert chain['latency']['stacked_rank'] == 2 * c.lora.r and chain['latency']['max_abs_logit_difference'] < 1e-3
  for name in ('sequence.md', 'sequence.png'):
    assert os.path.getsize(os.path.join(workdir, 'sequence', name)) > 0
