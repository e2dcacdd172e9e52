"""The embedded default: synthetic MovieLens-style data, a tiny T5 trained from scratch, CPU, minutes.

  python -m e2urec_jax run --config=configs/demo.py --workdir=runs/demo
Three seeds of the whole experiment (42, 43, 44): original, retrain, the noise floor, E2URec,
NegGrad and Bad-T on each; GA and NPO on the first only. Variant `:evidence` runs nine seeds,
42-50, with no time limit, and adds SISA and RecEraser on its first seed: what
docs/UNLEARNING.md's claims are judged on (every model the main job trains, it trains the same);
`:test` shrinks it for the end-to-end tests. SISA and RecEraser retrain every shard that holds a
forgotten user, about one retraining each (whole cost 1.19 and 1.11 of retraining's on seed 42,
the `:evidence` run at c6ec2b5, docs/results/demo-evidence, busy cores): with them the main job took 10.5
minutes on 2 quiet cores, without them it fits in ten.

What the demo has to show is the paper's story, so the original model must memorise the
users it is later asked to forget, clearly beyond what two retrains differ by:
- few users with many ratings each (~40 train samples per user), so a user's own samples
  teach the model that user's private preferences (the profile line identifies the user);
- no history in the prompt: with 3-5 items a 2-layer T5 this small never learns to find the
  target title's quality word within the demo's budget (test AUC ~0.55 without the users it
  memorised); the profile and the target title alone give AUC ~0.8 in 48-token prompts
  (one history item never fitted max_input_length 64, so the prompt texts are the same; the
  tokenizer trained on them is smaller, 357 words instead of 369, so the token ids differ);
- the original/retrain recipe trains 5 epochs at batch 32 (the best valid-loss check is
  kept). Measured over 4 seeds each (seeds 1-4, with the code of commit 9a70d64, before
  seeds.derive gave each phase its own stream; docs/UNLEARNING.md, the R3/R5/R10 regimes): 5 epochs leave the original 4.7x the
  noise floor from the retrained model, the most memorisation over noise of the lengths tried
  (3 epochs 2.6x, 10 epochs 3.0x). With the current code the demo's original sits at 2.8x
  the floor on seeds 42-44 (0.232 against 0.082; docs/results/demo) and 3.0x over seeds 42-50
  (0.299 against 0.099; docs/results/demo-evidence). Three seeds of the whole experiment fit in eight to nine minutes on 2 cores.
  Longer training makes E2URec cheaper relative to retraining (10 epochs: 0.19 of its cost;
  5: 0.37) but saturates the memorisation, and then E2URec's
  forgetting teacher is no closer to the retrained model than the original (the augmented
  model's rise is anti-aligned with what was memorised); shorter training aligns them but
  makes retraining so cheap that E2URec costs two thirds of it (3 epochs: 0.68);
- the augmented model: ~2 passes over the forget set at the training rate (45 steps);
- the baselines keep the paper's relative settings: learning rate = train rate / 10
  (5e-5 vs 5e-4 in the paper) and steps in the paper's proportions to E2URec's
  (NegGrad 3000, Bad-T 2400 for E2URec's 1000), scaled down; GA and NPO are not in the
  paper, and their steps (300 and 1000 for E2URec's 1000) are this project's choice.
"""
from e2urec_jax.config import default_config, paper_proportions


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'synthetic'  # Generated on the fly: nothing to download.
  c.data.num_samples = 6000  # Last N samples kept (the generator makes a few more).
  c.data.history_k = 0  # No history: a tiny model finds the target title in a short prompt.
  c.data.max_input_length = 64
  c.data.bucket_lengths = (56, 64)  # Prompts are 48-49 tokens: every batch pads to 56 (one compile per step
  # function); 64 = max_input_length, the bucket the longest allowed prompt needs (never used here).
  s = c.data.synthetic
  s.num_users = 120  # Few users, many ratings each: the model can memorise each user.
  s.ratings_per_user = 100
  s.num_styles = 3  # Each user's private taste over 3 title styles ...
  s.idiosyncrasy = 1.5  # ... strong enough that knowing the user changes the answer.
  c.model.tokenizer = 'train'  # A word-level tokenizer trained on the prompts.
  c.model.tokenizer_vocab_size = 1000
  c.model.scratch.d_model = 64
  c.model.scratch.num_layers = 2
  c.model.scratch.num_heads = 4
  c.model.scratch.d_kv = 16
  c.model.scratch.d_ff = 256
  c.model.dropout = 0.0  # Tiny model, few steps: dropout only slows learning.
  c.train.learning_rate = 1e-3  # From scratch, not fine-tuning: a higher rate.
  c.train.batch_size = 32
  c.train.epochs = 5
  c.train.eval_every = 50  # Valid loss every 50 steps (~half an epoch); the best check is kept.
  c.train.patience = 4
  c.augment.mode = 'full'  # As in the paper; it also reuses the original's compiled step.
  c.augment.learning_rate = 1e-3
  c.augment.batch_size = 32
  c.augment.steps = 45  # ~2 passes over the forget set (~670 samples).
  paper_proportions(c, 150)  # E2URec: lr 1e-3, batch 16, w 0.6, alpha 2 (the paper's).
  c.unlearn.receraser.attention_steps = 50
  c.checkpoint.every_steps = 200
  c.seeds = '42,43,44'  # The whole experiment per seed; the table is the mean ± std.
  c.unlearn.methods = 'e2urec,neggrad,badt,ga,npo'  # SISA and RecEraser: in :evidence (see above)
  c.repeat_methods = 'e2urec,neggrad,badt'
  c.eval.trajectory_every = 50  # trajectories.png: every method's distance to retrain while it unlearns.
  # HR@10 / NDCG@10 at the default 200 positives per set (x 19 negatives): about 6 s more a seed for its
  # seven models on 2 cores (+85% of the evaluation, a few percent of the job); 8 positives would make
  # each seed's HR move in steps of 1/8 (eval/ranking.py).
  if arg == 'evidence':  # What the claims are judged on: nine seeds, the main job's recipe, no time limit.
    c.seeds = '42,43,44,45,46,47,48,49,50'  # The three seed lists of the main job's checks, pooled.
    c.unlearn.methods = 'e2urec,neggrad,badt,sisa,receraser,ga,npo'  # Every method; the last four on 42.
  elif arg == 'test':  # The end-to-end tests: same story and recipe, a third of the samples, 2 seeds.
    c.seeds = '42,43'
    c.unlearn.methods = 'e2urec,neggrad,badt,sisa,receraser,ga,npo'  # Every method, as :evidence.
    c.repeat_methods = 'e2urec,badt'  # NegGrad on the first seed only: the suite's time
    c.eval.trajectory_every = 100
    c.data.num_samples = 2000
    c.augment.steps = 15  # The same ~2 passes over a forget set a third the size.
    paper_proportions(c, 100)
    c.unlearn.receraser.attention_steps = 10
    c.eval.batch_size = 32
    c.checkpoint.every_steps = 1000
  elif arg:
    raise ValueError(f'configs/demo.py: unknown variant {arg!r}; use :evidence, :test or nothing')
  return c
