"""`sequence`: deletion requests one after another, each method scored against retraining.

  python -m e2urec_jax sequence --config=configs/demo.py --workdir=runs/demo \
      --config.sequence.requests=5 --config.sequence.fraction=0.04

The forget users (config.data.forget_fraction of the train users, chosen by
config.data.forget_selection) are dealt, in a seeded order (numpy default_rng([seed, 4])),
into `sequence.requests` requests of round(sequence.fraction * #train users) users each.
Request k:
1. every method of `sequence.methods` unlearns request k's users, starting from the model it
   served after request k - 1 (the original for k = 1; an adapter result merged into its base,
   as `forget` chains versions); its retain set is the train samples of users not requested
   so far (requests before k are gone from the data, as `forget` scrubs them);
2. after every `sequence.retrain_every`-th request and after the last, the LLMRec recipe is
   retrained from the common start without all users requested so far: the reference;
3. each served model is scored like `evaluate` scores a run, with the forget set = the train
   samples of every user requested so far (forgotten earlier must stay forgotten): distance to
   that retrain (where there is one), test AUC, the membership-inference suite, fairness, and
   the cumulative cost. `retrain` is the retrain-from-scratch method (its cost: the retrains so far).
Unlike `forget`, nothing is scrubbed: the runner keeps the requested users to score them.
Everything lives under <workdir>/sequence/ (resumable: a finished phase is not run again), and
<workdir>/sequence/sequence.json, sequence.md and sequence.png are the report (eval/sequence_report.py).
The original model is the run's (models/original, trained here when missing), so a finished `run`
is reused.
"""
import dataclasses
import os
import time

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import distributed, runtime, storage
from e2urec_jax.data import SplitArrays
from e2urec_jax.errors import UserError
from e2urec_jax.eval import evaluate, fairness, metrics, mia, model_scores, sequence_report
from e2urec_jax.methods import llmrec, runner, spec
from e2urec_jax.models import answer_logits
from e2urec_jax.train import artifacts, context, paths
from e2urec_jax.train.inference import iterate_eval, load_predictor
from e2urec_jax.train.paths import ORIGINAL, Paths

SEQUENCE_DIR = 'sequence'
ORDER_STREAM = 4  # default_rng([seed, 4]): the data protocol's streams are [seed, 1..3]


# ------------------------------------------------------------------ the plan
def methods_of(config) -> list[str]:
  names = runner.check_methods(runner.parse_list(config.sequence.methods, 'sequence.methods'), 'sequence.methods')
  for name in names:
    if name not in spec.chainable():
      raise UserError(f'config.sequence.methods: {name!r} cannot serve requests one after another (its result is '
                      f'not one model built on the last); use some of {", ".join(spec.chainable())}')
  return names


def plan_requests(forget_users, num_train_users: int, *, requests: int, fraction: float, seed: int) -> list:
  """The users of each request: round(fraction * num_train_users) forget users each, in a seeded order."""
  per = int(round(fraction * num_train_users))
  users = np.unique(np.asarray(forget_users, np.int64))
  if per < 1:
    raise UserError(f'config.sequence.fraction={fraction} of {num_train_users} train users rounds to 0 users a '
                    'request; raise config.sequence.fraction')
  if per * requests > len(users):
    raise UserError(f'config.sequence.requests={requests} x {per} users (config.sequence.fraction={fraction}) need '
                    f'{per * requests} forget users, the run has {len(users)} (config.data.forget_fraction); '
                    'lower sequence.requests or sequence.fraction, or raise data.forget_fraction')
  order = np.random.default_rng([seed, ORDER_STREAM]).permutation(users)
  return [np.sort(order[k * per:(k + 1) * per]) for k in range(requests)]


def retrain_points(requests: int, every: int) -> list[int]:
  """Request indices (1-based) after which the reference is retrained: every `every`-th and the last."""
  return sorted({k for k in range(1, requests + 1) if k % every == 0} | {requests})


# ------------------------------------------------------------------ data and paths
def with_train(data, keep: np.ndarray, is_forget: np.ndarray):
  """`data` whose train split keeps the rows `keep` (bool [N]) with `is_forget` (bool [N]) as its forget set."""
  train = data.splits['train']
  fields = {f.name: getattr(train, f.name) for f in dataclasses.fields(SplitArrays)}
  fields = {k: (None if v is None else v[keep]) for k, v in fields.items() if k != 'is_forget'}
  return dataclasses.replace(data, splits=dict(data.splits, train=SplitArrays(**fields, is_forget=is_forget[keep])))


def step_dir(workdir: str, k: int) -> str:
  return os.path.join(workdir, SEQUENCE_DIR, f'r{k}')


def _paths(workdir, phases, start, published=()):
  return Paths(workdir=workdir, phases=phases, start=start, train_start=False, models=None, published=published)


# ------------------------------------------------------------------ the runner
def run_sequence(config, workdir: str, *, callbacks=()) -> dict:
  """Every request, every method, the retrains and the scores; writes the report and returns it."""
  begin = time.perf_counter()
  if storage.is_remote(workdir):
    raise UserError(f'sequence needs a local --workdir, not {workdir}: it trains and reads back dozens of models; '
                    'run it on a local copy of the workdir')
  if config.data.get('forget_unit', 'user') != 'user':
    raise UserError(f'sequence serves requests of whole users; config.data.forget_unit='
                    f'{config.data.forget_unit!r} deletes parts of users: set it back to \'user\' (`run` measures it)')
  cfg = config.sequence
  methods = methods_of(config)
  ctx = context.open_run(config, paths.run_paths(workdir))
  workdir = ctx.workdir
  train = ctx.data.splits['train']
  forget_users = np.unique(train.user_id[train.is_forget])
  requests = plan_requests(forget_users, len(np.unique(train.user_id)), requests=cfg.requests,
                           fraction=cfg.fraction, seed=config.seed)
  retrain_at = retrain_points(cfg.requests, cfg.retrain_every)
  llmrec.ensure_original(ctx, callbacks)
  original = ctx.model_dir(ORIGINAL)
  served = {m: original for m in methods}  # the model each method serves now (full weights)
  cumulative = {m: 0.0 for m in methods + [llmrec.RETRAIN]}
  chain = {m: [] for m in methods}  # each method's results, request after request
  steps = []
  for k in range(1, cfg.requests + 1):
    so_far = np.concatenate(requests[:k])
    earlier = np.isin(train.user_id, np.concatenate(requests[:k - 1]) if k > 1 else np.zeros(0, np.int64))
    step_data = with_train(ctx.data, ~earlier, np.isin(train.user_id, requests[k - 1]))
    results = {}
    for m in methods:  # 1. each method serves request k from what it served before
      mctx = dataclasses.replace(ctx, paths=_paths(workdir, os.path.join(step_dir(workdir, k), m), served[m]),
                                 data=step_data)  # shares the compiled steps
      stats = runner.run_method(mctx, m, callbacks=callbacks)
      cumulative[m] += stats['time_s']
      results[m] = {'time_s': stats['time_s'], 'model': mctx.model_dir(m)}
      chain[m].append({'model': mctx.model_dir(m), 'bytes': stats.get('checkpoint_bytes'),
                       'adapters': artifacts.is_adapter_dir(mctx.model_dir(m))})
      served[m] = artifacts.full_weights_dir(mctx.model_dir(m))
    so_far_mask = np.isin(train.user_id, so_far)
    published = tuple((m, r['model']) for m, r in results.items())
    if k in retrain_at:  # 2. the reference: retrained without every user requested so far
      rctx = dataclasses.replace(ctx, paths=_paths(workdir, os.path.join(step_dir(workdir, k), 'reference'), original),
                                 data=with_train(ctx.data, np.ones(len(so_far_mask), bool), so_far_mask))
      stats = llmrec.ensure_retrain(rctx, callbacks=callbacks)
      cumulative[llmrec.RETRAIN] += stats['time_s']
      results[llmrec.RETRAIN] = {'time_s': stats['time_s'], 'model': rctx.model_dir(llmrec.RETRAIN)}
      published += ((llmrec.RETRAIN, rctx.model_dir(llmrec.RETRAIN)),)
    # 3. the scores: forget set = every user requested so far
    sctx = dataclasses.replace(ctx, paths=_paths(workdir, os.path.join(step_dir(workdir, k), 'score'), original,
                                                 published), data=with_train(ctx.data, np.ones(len(so_far_mask), bool),
                                                                             so_far_mask))
    names = [ORIGINAL] + ([llmrec.RETRAIN] if k in retrain_at else []) + methods
    scored = score_step(sctx, names, with_reference=k in retrain_at)
    for name, row in scored['methods'].items():
      if name in results:
        row['time_s'] = results[name]['time_s']
        row['cumulative_time_s'] = cumulative[name]
    steps.append({'request': k, 'users': int(len(requests[k - 1])), 'cumulative_users': int(len(so_far)),
                  'request_samples': int(step_data.splits['train'].is_forget.sum()),
                  'forget_samples': int(so_far_mask.sum()), 'retrained': k in retrain_at,
                  'methods': scored['methods'], 'mia': scored.get('mia'), 'fairness': scored.get('fairness')})
    print(f'request {k}/{cfg.requests}: {len(requests[k - 1])} users ({steps[-1]["request_samples"]} samples) '
          f'served by {", ".join(methods)}' + (' and retrained' if k in retrain_at else ''), flush=True)
  costs = chain_cost(chain, served)
  for m, c in costs.items():
    if c['adapters']:  # served merged vs the adapters stacked on the original: latency, and the same function
      c['latency'] = chain_latency(ctx, [r['model'] for r in chain[m]], served[m])
  out = {'sequence': {'requests': int(cfg.requests), 'fraction': float(cfg.fraction),
                      'retrain_every': int(cfg.retrain_every), 'retrained_after': retrain_at, 'methods': methods,
                      'users_per_request': int(len(requests[0])), 'forget_selection': str(config.data.forget_selection),
                      'seed': int(config.seed)},
         'steps': steps, 'chain': costs,
         'time_s': time.perf_counter() - begin, 'config': runtime.config_to_json(config)}
  if distributed.is_primary():
    sequence_report.write_report(os.path.join(workdir, SEQUENCE_DIR), out)
    print(open(os.path.join(workdir, SEQUENCE_DIR, 'sequence.md')).read())
  return out


def score_step(ctx, names: list[str], *, with_reference: bool) -> dict:
  """evaluate's rows for `names` against the step's retrain; without one (sequence.retrain_every),
  the rows that need no reference: test quality, fairness, the MIA suite (distances are null)."""
  if with_reference:
    return evaluate.evaluate_models(ctx, names, mechanism_for=())  # no method diagnostics in a sequence
  train, test = ctx.data.splits['train'], ctx.data.splits['test']
  forget = np.flatnonzero(train.is_forget)
  nonmember = np.flatnonzero(~np.isin(test.user_id, np.unique(train.user_id[forget])))
  active, split_info = fairness.activity_split(train.user_id, test.user_id)
  rows = {}
  for name in names:
    model = load_predictor(ctx, name)
    on_test = model_scores.score(ctx, model, 'test', np.arange(len(test.label)), desc=f'{name}/test')
    on_forget = model_scores.score(ctx, model, 'train', forget, desc=f'{name}/forget')
    quality = {'auc': metrics.auc(train.label[forget], on_forget['p_yes']),
               'acc': metrics.accuracy(train.label[forget], on_forget['p_yes']),
               'logloss': metrics.logloss(train.label[forget], on_forget['p_yes']),
               'mia_auc': metrics.mia_auc(on_forget['loss'], on_test['loss'][nonmember])}
    rows[name] = {'test': {'auc': metrics.auc(test.label, on_test['p_yes']),
                           'logloss': metrics.logloss(test.label, on_test['p_yes']),
                           'acc': metrics.accuracy(test.label, on_test['p_yes'])},
                  'forget': quality,
                  'mia': mia.aucs(on_forget['mia'], {a: v[nonmember] for a, v in on_test['mia'].items()}),
                  'fairness': fairness.group_auc(test.label, on_test['p_yes'], active)}
  fairness.with_gap_change(rows)
  return {'methods': rows, 'fairness': split_info,
          'mia': {'attacks': list(mia.ATTACKS), 'reference_model': None, 'target': None,
                  'members': int(len(forget)), 'nonmembers': int(len(nonmember))}}


def chain_cost(chain: dict, served: dict) -> dict:
  """What serving the chain costs, per method: the bytes each request's result adds, and the served
  model. Every result is merged into its base before the next request, so the served model is one
  full model whatever the chain's length (no adapter in its forward pass); keeping the
  adapters stacked instead would run one more rank-r adapter pair per request in every adapted layer."""
  out = {}
  for m, results in chain.items():
    per_request = [int(r['bytes'] or 0) for r in results]
    adapters = all(r['adapters'] for r in results)
    out[m] = {'result_bytes_per_request': per_request, 'adapters': adapters,
              'served_model_bytes': artifacts.dir_bytes(served[m]),
              'stacked_adapter_bytes': int(sum(per_request)) if adapters else None}
  return out


def chain_latency(ctx, adapter_dirs: list[str], served_dir: str, *, batches: int = 4, repeats: int = 5) -> dict:
  """E2URec's chain served two ways, timed on the first `batches` test batches: merged (the served
  full model, no adapter in the forward) against stacked (the original with every request's
  adapters at once: rank r each, concatenated, which is the same function since each request's
  adapters were trained on the previous ones merged). Also how far apart their logits are."""
  parts = [artifacts.load_adapters(d)[0] for d in adapter_dirs]
  stacked = _concat_adapters(parts)
  original = ctx.put_frozen(ctx.base_dtype(ctx.load_params(ORIGINAL)))
  merged = ctx.put_frozen(ctx.base_dtype(artifacts.load_full(served_dir)[1]))
  fn = jax.jit(lambda params, adapters, batch: answer_logits(ctx.model, params, batch, adapters=adapters))
  test = np.arange(len(ctx.data.splits['test'].label))
  chunks = [b for b, _ in iterate_eval(ctx, 'test', test)][:batches]

  ways = {'merged': (merged, None), 'stacked': (original, ctx.put(stacked))}
  logits = {k: np.concatenate([np.asarray(fn(p, a, b)) for b in chunks]) for k, (p, a) in ways.items()}  # + compile
  best = {k: float('inf') for k in ways}
  for _ in range(repeats):  # interleaved, best of `repeats`: a busy machine slows both alike
    for k, (p, a) in ways.items():
      t = time.perf_counter()
      jax.block_until_ready([fn(p, a, b) for b in chunks])
      best[k] = min(best[k], time.perf_counter() - t)
  merged_s, stacked_s = best['merged'], best['stacked']
  merged_logits, stacked_logits = logits['merged'], logits['stacked']
  rows = sum(int(b['input_ids'].shape[0]) for b in chunks)
  return {'rows': rows, 'merged_ms_per_row': 1e3 * merged_s / rows, 'stacked_ms_per_row': 1e3 * stacked_s / rows,
          'stacked_rank': int(sum(_rank(p) for p in parts)),
          'max_abs_logit_difference': float(np.max(np.abs(merged_logits - stacked_logits)))}


def _concat_adapters(parts: list):
  """Adapters of rank r_1..r_k on the same layers -> one adapter of rank sum(r_i) that adds all their
  updates under the same scale: lora_a [.., d_in, r] joined on its last axis, lora_b [.., r, d_out] on r."""
  flats = [traverse_util.flatten_dict(p) for p in parts]
  out = {}
  for key in flats[0]:
    axis = -1 if key[-1] == 'lora_a' else -2
    out[key] = jnp.concatenate([jnp.asarray(f[key]) for f in flats], axis=axis)
  return jax.device_get(traverse_util.unflatten_dict(out))


def _rank(adapters) -> int:
  return next(int(v.shape[-1]) for k, v in traverse_util.flatten_dict(adapters).items() if k[-1] == 'lora_a')
