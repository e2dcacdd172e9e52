"""The default experiment configuration: every field, with what it means.

Config files under `configs/` start from `default_config()` and change only what
differs (big_vision style); a field that is not here does not exist, so a typo in
`--config.x.y=...` is an error rather than a silently ignored setting.
Defaults are this project's: many are the paper's (E2URec, arXiv 2403.03536) or its original
code's (E2URec's alpha, w, steps and learning rates, the augmented model's steps, LoRA's
rank), others are not (the training recipe's batch, epochs and patience, gradient clipping,
no weight decay, the 'default' data protocol, LoRA for the augmented model): `paper_recipe`
below sets the original code's, and docs/PAPER.md lists every remaining difference.

Adding a field: give it a default and a comment below, and a rule in RULES below
that `validate` checks before any work; a method's own fields are declared in its module
(`MethodSpec.defaults` and `.rules`) and appear here as config.unlearn.<method>.
"""
import ml_collections

from e2urec_jax import methods  # noqa: F401 (registers the built-in methods)
from e2urec_jax import names, rules, runtime, storage
from e2urec_jax.backbone_rules import check_pretrain
from e2urec_jax.errors import UserError
from e2urec_jax.methods import spec as method_spec

ConfigDict = ml_collections.ConfigDict


def __getattr__(name):
  if name == 'ALL_METHODS':  # every registered method, in report order (read when asked: tests register more)
    return method_spec.names()
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def default_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 42  # Experiment seed: forget-user draw, shard split, and (seeds.derive) every training phase's.
  # Seeds of the whole experiment, e.g. '42,43,44': `run` repeats everything a seed decides (forget
  # users, shards, initialisation, data order, original, retrain, noise floor, augmented model and
  # the methods of `repeat_methods`) per seed and reports per-seed rows, mean ± std and paired
  # comparisons. The first becomes config.seed (its models sit where a one-seed run puts them);
  # the others live under <workdir>/seeds/<seed>/. '' = config.seed alone.
  c.seeds = ''
  c.repeat_methods = 'e2urec,neggrad,badt'  # Methods run on every seed; the others on the first seed only.
  c.jax_cache_dir = '~/.cache/e2urec_jax/xla'  # Persistent XLA compilation cache; '' turns it off (one that
  # cannot be written: a warning line, and the command runs without it).
  c.progress = True  # tqdm progress bars on long work.

  # ---------------------------------------------------------------- data
  c.data = d = ConfigDict()
  d.source = 'synthetic'  # 'synthetic' | 'ml-100k' | 'ml-1m' | 'goodreads' | 'csv' (names.SOURCES).
  d.raw_dir = ''  # Local copy of the raw files; '' = download (checksummed) into download_dir.
  d.download_dir = '~/.cache/e2urec_jax/raw'  # Where downloads land (never inside the repo).
  d.label_threshold = 3.0  # label = rating > threshold (MovieLens: > 3 is "liked").
  d.rating_scale = ()  # (lowest, highest) rating; () = the source's: 1-5 (MovieLens, GoodReads, synthetic, csv).
  d.duplicates = 'latest'  # One rating per (user, item): 'latest' keeps the latest (a count is printed); 'error' refuses.
  d.history_k = 10  # Most recent rated items shown in the prompt.
  # MovieLens profiles (synthetic, ml-100k, ml-1m) also give the user's zip code ("His zip code is
  # 55105."). It tells almost every user apart (ML-100K: 929 of 943 users have a profile of their
  # own with it, 326 without), so a model can learn each user's taste, as a recommender with user
  # ids does. The paper's prompt has no zip code: needs protocol 'default'.
  d.profile_zip = False
  # Which of the source's users the data set holds: 'all'; 'experiment' = all but a held-out share
  # (heldout_fraction, drawn by a hash of the user id, the same for every seed) that a backbone is
  # pretrained on (config.pretrain) and that never appears here; 'heldout' = that share alone (the
  # backbone's own data). Synthetic data: 'heldout' is another draw of users from the same world
  # (same items), and 'experiment' the usual draw.
  d.users = 'all'
  d.heldout_fraction = 0.3  # Share of the users held out by users='experiment'/'heldout' (not synthetic).
  d.min_history = 5  # Samples with fewer earlier ratings of the same user are dropped.
  d.num_samples = 100_000  # Keep the last N samples in global time order.
  d.split = (0.6, 0.2, 0.2)  # train/valid/test fractions, in time order.
  d.forget_fraction = 0.2  # Fraction of train users drawn for the forget set (their number: round(f * #users)).
  d.forget_selection = 'random'  # Who they are: 'random', 'core' (most train samples) or 'edge' (fewest).
  # What of each drawn user the forget set holds (data/protocol.py): 'user' = all their train samples;
  # 'interactions' = a share (forget_interaction_share) of each one's train samples, drawn at random;
  # 'category' = each one's train samples of one item category (a genre of the item table; synthetic
  # data: the genre words of its titles), drawn per user among the categories that hold some but not
  # all of that user's samples. The retrained model keeps the users' other samples; the report scores
  # them apart ('collateral'). Needs protocol 'default'; `sequence` serves whole users only.
  d.forget_unit = 'user'
  d.forget_interaction_share = 0.5  # forget_unit='interactions': share of a drawn user's train samples (>= 1).
  d.num_shards = 4  # SISA random shards and RecEraser user shards.
  # How the seed draws the forget users and shards, and which prompt (data/protocol.py, prompts.py):
  # 'paper' = the original code's draws (Python `random` shuffle of the users, per-sample random SISA
  #   shards, RecEraser = consecutive chunks of the shuffled users) and its ML-1M prompt verbatim:
  #   use it to compare with the paper's numbers.
  # 'default' = equal-size SISA shards and RecEraser shards balanced by sample count (a fairer cost
  #   comparison between shard methods), round() counts, and a shorter prompt that reads the same for
  #   every data set: better for anything else.
  d.protocol = 'default'
  d.max_input_length = 256  # Prompt tokens at most; history is truncated first, never target/question.
  d.max_shortened = 0.05  # Share of prompts whose history may be shortened to fit; more is refused by prepare.
  d.bucket_lengths = (128, 256)  # Prompts are padded to the smallest bucket that fits (few compiles).
  d.goodreads_genre = 'poetry'  # UCSD Book Graph subset: goodreads_interactions_<genre>.json.gz.
  d.synthetic = s = ConfigDict()  # The embedded default data set (MovieLens layout, planted structure).
  s.seed = 42  # The world's own seed: fixed while config.seed varies the experiment (forget draw, init, order).
  s.num_users = 300  # Users drawn.
  s.num_items = 200  # Items (movies) drawn.
  s.num_genres = 6  # Genres; each user has a taste over them, each item one or two genres.
  s.ratings_per_user = 40  # Mean ratings per user (varies per user).
  s.noise = 0.5  # Std of the rating noise; lower = easier to learn.
  s.num_styles = 5  # Title style words (Midnight, Golden, ...); each user privately likes some of them.
  s.idiosyncrasy = 0.8  # Std of that private per-user style preference: what only training on the user reveals.
  d.csv = t = ConfigDict()  # The generic reader (source='csv'): a platform's own interactions.
  t.ratings = ''  # CSV or Parquet file with one interaction per row (required for source='csv').
  t.items = ''  # Optional item table (id + title [+ genre]); '' = titles are "item <id>".
  t.item_table = ''  # Same as `items`, but settable by flag (--config.data.csv.items hits ConfigDict.items()).
  t.users = ''  # Optional user profile table (id + free-text/columns); '' = no profile line.
  t.user_col = 'user_id'  # Column names in the tables above.
  t.item_col = 'item_id'  # Item id column (ratings and item tables).
  t.rating_col = 'rating'  # Rating column; label = rating > data.label_threshold.
  t.time_col = 'timestamp'  # Unix seconds (or anything that orders time).
  t.title_col = 'title'  # Item title column of the item table.
  t.item_noun = 'item'  # Word used in the prompt ("movie", "book", "product").

  # --------------------------------------------------------------- model
  c.model = m = ConfigDict()
  m.name_or_path = ''  # Hugging Face folder or hub id (t5-base, Qwen/...); '' = build model.scratch.
  m.tokenizer = ''  # '' = the model's own tokenizer; 'train' = train one on the prompts (scratch models).
  m.tokenizer_vocab_size = 2000  # Vocabulary of a tokenizer trained on the fly.
  m.scratch = sc = ConfigDict()  # A randomly initialised model (the demo, tests, benchmarks).
  sc.family = 't5'  # 't5' | 'llama' (names.FAMILIES).
  sc.d_model = 64  # Hidden width.
  sc.num_layers = 2  # Encoder layers (and decoder layers for T5).
  sc.num_heads = 4  # Attention heads.
  sc.num_kv_heads = 2  # Llama GQA key/value heads.
  sc.d_ff = 256  # Feed-forward width.
  sc.d_kv = 16  # Per-head width (T5).
  sc.feed_forward_proj = 'relu'  # T5 v1.0 'relu' or v1.1 'gated-gelu'.
  m.dtype = 'float32'  # Compute dtype; 'bfloat16' on GPU/TPU. Losses are always fp32.
  m.base_dtype = 'float32'  # Storage dtype of the frozen base ('bfloat16' to fit large models).
  m.dropout = 0.1  # Model dropout while training (T5's dropout_rate).
  m.remat = False  # Rematerialise each layer in the backward pass (memory for compute).
  # Speed options (models/attention.py, docs/GPU.md); the defaults are the original paths (names.SPEED_OPTIONS).
  m.attention = 'einsum'  # 'einsum' (fp32 probabilities) | 'xla' (jax.nn.dot_product_attention) | 'cudnn'.
  m.attention_dropout = -1.0  # On attention probabilities in training; -1 = the model's rate; 0 = fused kernels.
  m.remat_policy = 'nothing'  # With remat: 'nothing' kept, 'dots' (projection/MLP outputs) or 'dots_all' (all matmuls).
  m.scan_unroll = 0  # Layers unrolled per layer-scan iteration; 0 = all on CPU, 1 (a rolled loop) on accelerators.
  m.dropout_seeds = 'bits'  # Dropout mask seeds: 'bits' (drawn per site) or 'key' (the site key's words; less HLO).

  # ----------------------------------------------------------- LoRA
  c.lora = lo = ConfigDict()  # Adapters of the E2URec student (and LoRA training elsewhere).
  lo.r = 16  # Rank.
  lo.alpha = 32.0  # lora_alpha; adapters are scaled by alpha / r.
  lo.dropout = 0.05  # Dropout on the adapter input.
  lo.targets = ''  # Comma-separated module names; '' = family default (T5 'q,v'; Llama 'q_proj,v_proj').
  lo.init_from = ''  # A PEFT LoRA folder (PeftModel.save_pretrained); '' = phases start from fresh adapters.
  lo.init_phases = 'e2urec'  # Phases that start from init_from: LoRA methods, augmented, original, retrain, shards.

  # ---------------------------------------- original model and retrain recipe
  c.train = tr = ConfigDict()  # Instruction tuning of the LLMRec on train (original) or retain (retrain).
  tr.mode = 'full'  # 'full' fine-tuning (paper, T5) or 'lora' (decoder LLMs; merged into the original).
  tr.learning_rate = 5e-4  # AdamW rate (the paper's T5 fine-tuning rate).
  tr.weight_decay = 0.0  # AdamW weight decay.
  tr.batch_size = 16  # Samples per step (a multiple of the data-parallel devices; at most the train split:
  # a larger batch size, in every phase, is cut to it with a line, sampling.fit_batch_sizes).
  tr.epochs = 5  # Passes over the split at most.
  tr.max_steps = 0  # > 0 caps the steps (for small configs).
  tr.eval_every = 0  # Steps between valid-loss checks; 0 = once an epoch; more than the phase's steps =
  # one check, at the end: the last model is kept (no early stopping).
  tr.patience = 2  # Checks in a row without a better valid loss that are tolerated; the next one stops
  # (the original code's endure_times counts the stopping check too: its 3 is patience 2 here).
  tr.warmup_steps = 0  # Linear warm-up steps.
  tr.max_grad_norm = 1.0  # Clip each step's gradient to this global norm; 0 = no clipping (the original code).

  # --------------------------------------------------------- augmented model
  c.augment = au = ConfigDict()  # The original fine-tuned on the forget set (E2URec's theta_a).
  au.mode = 'lora'  # 'lora' (shares the frozen base) or 'full' (as in the paper).
  au.learning_rate = 5e-5  # AdamW rate.
  au.steps = 1200  # Steps on the forget set.
  au.batch_size = 16  # Forget samples per step.
  au.weight_decay = 0.0  # AdamW weight decay (the original code: torch's default 0.01).
  au.max_grad_norm = 1.0  # Gradient clipping as train.max_grad_norm; 0 = none (the original code).

  # --------------------------------------------------- pretrained backbone
  # The paper fine-tunes a pretrained T5-base: original, retrain and augmented model share its weights.
  # Without a model hub the project pretrains its own (e2urec_jax/backbone.py): model.scratch trained by
  # the recipe below on a population disjoint from the experiment's (data.users), saved as a Hugging
  # Face folder, cached under cache_dir by its fingerprint, and loaded through model.name_or_path.
  c.pretrain = pt = ConfigDict()
  pt.enabled = False  # True: every model of the run starts from the backbone (model.name_or_path is set to it).
  pt.seed = 0  # Its own seed (initialisation, data order): one backbone for every experiment seed.
  pt.num_users = 240  # Synthetic data: users of its population (the experiment's world, another draw of users).
  pt.num_samples = 20_000  # Last N samples of its population kept (as data.num_samples).
  pt.learning_rate = 1e-3  # AdamW rate (from scratch: a high rate).
  pt.batch_size = 32  # Samples per step.
  pt.epochs = 5  # Passes at most; the best valid-loss check is kept.
  pt.eval_every = 50  # Steps between valid-loss checks.
  pt.patience = 4  # Checks without a better valid loss before it stops.
  pt.cache_dir = '~/.cache/e2urec_jax/backbones'  # One folder per fingerprint, shared by runs and seeds.

  # ------------------------------------------------------------- unlearning
  c.unlearn = un = ConfigDict()
  un.method = 'e2urec'  # Method of the `unlearn` command (and of `forget`).
  un.methods = ','.join(method_spec.default_methods())  # Methods `run` executes, comma-separated.
  un.weight_decay = 0.0  # AdamW weight decay of every method's phase (the original code: torch's default 0.01).
  un.max_grad_norm = 1.0  # Gradient clipping of every method's phase as train.max_grad_norm; 0 = none.
  # Retrain-free stopping (opt-in; '' = every method runs its configured steps, as the paper).
  # 'heldout_mia': every auto_every steps, score the loss attack telling the forget samples from
  # the same users' never-trained valid samples; keep the model whose AUC is nearest 0.5 and stop
  # after auto_patience checks without getting nearer. Applies to every method trained by steps
  # from the original (e2urec, neggrad, badt, ga, npo), so none is tuned alone; the sharded
  # retrains (sisa, receraser) run as configured. The checks count in time_s, not in unlearn_time_s.
  un.auto = ''
  un.auto_every = 25  # Steps between checks (and at the last step).
  un.auto_patience = 2  # Checks without getting nearer 0.5 before the phase stops.
  for spec in method_spec.specs():  # One section per registered method, declared in its module.
    un[spec.name] = ConfigDict(dict(spec.defaults))  # e.g. un.e2urec.alpha; see e2urec_jax/methods/<name>.py

  # ------------------------------------------------------- sweeps/ablations
  c.sweep = sw = ConfigDict()  # Extra E2URec rows in the report (empty = none).
  sw.alphas = ''  # e.g. '0.5,1,4': one e2urec row per alpha.
  sw.ws = ''  # e.g. '0.3,0.8': one e2urec row per w.
  sw.ablations = ''  # 'no_forget_teacher,no_remember_teacher'.
  sw.seeds = ''  # e.g. '1,2': the unlearning methods alone again under other seeds, on the same original.

  # ---------------------------------------------- sequential requests (`sequence`)
  c.sequence = sq = ConfigDict()  # Deletion requests one after another (e2urec_jax/sequence.py); opt-in.
  sq.requests = 5  # Requests in the sequence, dealt from the forget users (data.forget_fraction, forget_selection).
  sq.fraction = 0.04  # Users per request, as a fraction of the train users (requests x fraction <= forget_fraction).
  sq.retrain_every = 1  # Retrain the reference after every N-th request (and the last); distances only there.
  sq.methods = 'e2urec,neggrad,badt'  # Methods serving the requests (chainable ones); retrain is always reported.

  # ------------------------------------------------------------ evaluation
  c.eval = ev = ConfigDict()
  ev.batch_size = 64  # Samples per evaluation batch (at most the largest split, as train.batch_size).
  ev.noise_floor = True  # Train a second retrain (seed + 1) to measure the retrain-vs-retrain distance.
  # Score every unlearning method every N steps (0 = never): distance to retrain on the forget set,
  # forget AUC, MIA AUC and test AUC on a fixed subsample, in results.json and trajectories.png.
  # Scoring time is not counted in a method's time.
  ev.trajectory_every = 0
  ev.trajectory_test_samples = 512  # Test samples (a fixed random subset) behind a trajectory's test AUC.
  # Ranking (eval/ranking.py): each positive's item among this many items its user never rated, all scored
  # by P(Yes) on the positive's prompt with the item swapped; HR@k and NDCG@k on test and forget. 0 = off.
  ev.ranking_negatives = 19  # Sampled negatives per positive (19: 20 candidates), the same for every model.
  ev.ranking_k = 10  # The cut-off k of HR@k and NDCG@k.
  ev.ranking_max_positives = 200  # Positives ranked per set (a fixed random subset; 0 = all): bounds the cost.
  # Does forgetting stick? (eval/relearn.py; opt-in.) After scoring, a copy of every reported model
  # (original, retrain, each method's) is fine-tuned again, all weights of the model as deployed (a
  # LoRA student merged into its base; every shard model of an ensemble), with the same optimiser
  # (AdamW, train.weight_decay, train.max_grad_norm), rate, batch and batches for every model, on:
  # 'forget', a seeded part of the forget set (`samples`), and 'retain', as many retained samples. After
  # each of `steps` steps the copy is scored on the rest of the forget set (the relearned samples are
  # never measured): symKL to the original's and to retrain's predictions, forget AUC. The published
  # models are never changed.
  ev.relearn = rl = ConfigDict()
  rl.enabled = False  # True: measure it (costs (1 + shards) x 2 x max(steps) steps per model and seed).
  rl.steps = '10,25,50'  # Fine-tuning steps at which each copy is scored (one run of the largest per copy).
  rl.samples = 0.1  # Forget samples fine-tuned on: a share of the forget set (0 < x < 1) or a count (whole, >= 1).
  rl.settings = 'forget,retain'  # What the copies are fine-tuned on: 'forget', 'retain' or both.
  rl.learning_rate = 0.0  # AdamW rate; 0 = train.learning_rate (the original's).
  rl.batch_size = 0  # Samples per step; 0 = train.batch_size (the original's).

  # ------------------------------------------------------------- devices
  # One mesh over every device of every host (hosts join via jax.distributed: see
  # e2urec_jax/distributed.py): axis 'data' splits each batch's rows, axis 'model' shards the
  # frozen weights (base, teachers) FSDP-style, each leaf on its largest dimension divisible by it.
  # Adapters and their optimizer state are always replicated.
  c.mesh = ms = ConfigDict()
  ms.model_axis = 1  # Devices per 'model' group, dividing the device count; 1 = pure data parallel.

  # ---------------------------------------------------------- checkpoints
  c.checkpoint = ck = ConfigDict()
  ck.every_steps = 500  # Save a resume checkpoint every N steps (and at the end).
  ck.max_to_keep = 2  # Resume checkpoints kept per phase (the newest).
  return c


# ------------------------------------------------------------------ validation
# One rule per field (e2urec_jax/rules.py); a method's own fields take its spec's rules.
# `validate` runs in main before any work, so a bad value costs seconds, not a training run.
_DTYPES = rules.one_of('float32', 'bfloat16', 'float16')
# The LLMRec recipe's phases (config.train.mode) that can start from lora.init_from when they train adapters;
# so can the LoRA methods and the helper models that declare a mode_key (MethodSpec.helpers).
INIT_PHASES = ('original', 'retrain', 'shards')
MOVIELENS_PROFILES = tuple(s.name for s in names.SOURCES.values() if s.movielens_profiles)  # data.profile_zip's
RULES = {
    'seed': rules.NON_NEGATIVE_INT, 'seeds': rules.comma_list(rules.NON_NEGATIVE_INT, parse=int),
    'repeat_methods': rules.TEXT, 'jax_cache_dir': rules.TEXT, 'progress': rules.BOOLEAN,
    'data.source': rules.one_of(*names.SOURCE_NAMES),
    'data.raw_dir': rules.TEXT, 'data.download_dir': rules.TEXT, 'data.label_threshold': rules.FINITE,
    'data.rating_scale': rules.Rule(lambda x: isinstance(x, (tuple, list)) and (
        len(x) == 0 or (len(x) == 2 and all(rules.FINITE(v) is None for v in x) and x[0] < x[1])),
        'empty (the source\'s scale) or two finite numbers, lowest < highest: (1, 10)'),
    'data.duplicates': rules.one_of('latest', 'error'),
    'data.max_shortened': rules.number(0, 1),
    'data.users': rules.one_of('all', 'experiment', 'heldout'), 'data.heldout_fraction': rules.number(0, 1, low_open=True, high_open=True),
    'pretrain.enabled': rules.BOOLEAN, 'pretrain.seed': rules.NON_NEGATIVE_INT, 'pretrain.num_users': rules.integer(2),
    'pretrain.num_samples': rules.integer(3), 'pretrain.learning_rate': rules.POSITIVE,
    'pretrain.batch_size': rules.POSITIVE_INT, 'pretrain.epochs': rules.POSITIVE_INT,
    'pretrain.eval_every': rules.NON_NEGATIVE_INT, 'pretrain.patience': rules.NON_NEGATIVE_INT,
    'pretrain.cache_dir': rules.TEXT,
    'data.history_k': rules.NON_NEGATIVE_INT, 'data.profile_zip': rules.BOOLEAN, 'data.min_history': rules.NON_NEGATIVE_INT,
    'data.num_samples': rules.integer(3),
    'data.split': rules.sequence(rules.number(0, 1, low_open=True), length=3),
    'data.forget_fraction': rules.number(0, 1, low_open=True, high_open=True),
    'data.num_shards': rules.POSITIVE_INT, 'data.protocol': rules.one_of('default', 'paper'),
    'data.max_input_length': rules.POSITIVE_INT,
    'data.forget_selection': rules.one_of('random', 'core', 'edge'),
    'data.forget_unit': rules.one_of('user', 'interactions', 'category'),
    'data.forget_interaction_share': rules.number(0, 1, low_open=True, high_open=True),
    'data.bucket_lengths': rules.sequence(rules.POSITIVE_INT), 'data.goodreads_genre': rules.TEXT,
    'data.synthetic.seed': rules.NON_NEGATIVE_INT, 'data.synthetic.num_users': rules.integer(2),
    'data.synthetic.num_items': rules.integer(10),
    'data.synthetic.num_genres': rules.integer(2, 18), 'data.synthetic.ratings_per_user': rules.integer(2),
    'data.synthetic.noise': rules.NON_NEGATIVE, 'data.synthetic.num_styles': rules.integer(1, 8),
    'data.synthetic.idiosyncrasy': rules.NON_NEGATIVE,
    **{f'data.csv.{k}': rules.TEXT for k in ('ratings', 'items', 'item_table', 'users', 'user_col', 'item_col',
                                             'rating_col', 'time_col', 'title_col', 'item_noun')},
    'model.name_or_path': rules.TEXT, 'model.tokenizer': rules.TEXT, 'model.tokenizer_vocab_size': rules.integer(8),
    'model.scratch.family': rules.one_of(*names.FAMILY_NAMES),
    **{f'model.scratch.{k}': rules.POSITIVE_INT for k in ('d_model', 'num_layers', 'num_heads', 'num_kv_heads',
                                                           'd_ff', 'd_kv')},
    'model.scratch.feed_forward_proj': rules.one_of('relu', 'gelu', 'silu', 'gated-relu', 'gated-gelu',
                                                    'gated-silu'),
    'model.dtype': _DTYPES, 'model.base_dtype': _DTYPES, 'model.dropout': rules.PROBABILITY,
    'model.remat': rules.BOOLEAN,
    'model.attention': rules.one_of(*names.ATTENTION_IMPLEMENTATIONS),
    'model.attention_dropout': rules.Rule(lambda x: x == -1 or rules.PROBABILITY(x) is None,
                                          "-1 (the model's dropout rate) or a finite number >= 0 and < 1"),
    'model.remat_policy': rules.one_of(*names.REMAT_POLICIES), 'model.scan_unroll': rules.NON_NEGATIVE_INT,
    'model.dropout_seeds': rules.one_of(*names.DROPOUT_SEEDS),
    'lora.r': rules.POSITIVE_INT, 'lora.alpha': rules.POSITIVE, 'lora.dropout': rules.PROBABILITY,
    'lora.targets': rules.TEXT, 'lora.init_from': rules.TEXT,  # lora.init_phases: _method_rules (names methods)
    'train.mode': rules.one_of('full', 'lora'), 'train.learning_rate': rules.POSITIVE,
    'train.weight_decay': rules.NON_NEGATIVE, 'train.batch_size': rules.POSITIVE_INT,
    'train.epochs': rules.POSITIVE_INT, 'train.max_steps': rules.NON_NEGATIVE_INT,
    'train.eval_every': rules.NON_NEGATIVE_INT, 'train.patience': rules.NON_NEGATIVE_INT,
    'train.warmup_steps': rules.NON_NEGATIVE_INT, 'train.max_grad_norm': rules.NON_NEGATIVE,
    'augment.mode': rules.one_of('lora', 'full'), 'augment.learning_rate': rules.POSITIVE,
    'augment.steps': rules.POSITIVE_INT, 'augment.batch_size': rules.POSITIVE_INT,
    'augment.weight_decay': rules.NON_NEGATIVE, 'augment.max_grad_norm': rules.NON_NEGATIVE,
    'unlearn.weight_decay': rules.NON_NEGATIVE, 'unlearn.max_grad_norm': rules.NON_NEGATIVE,
    'unlearn.auto': rules.one_of('', 'heldout_mia'), 'unlearn.auto_every': rules.POSITIVE_INT,
    'unlearn.auto_patience': rules.NON_NEGATIVE_INT,
    'sweep.alphas': rules.comma_list(rules.NON_NEGATIVE, parse=float),
    'sweep.ws': rules.comma_list(rules.number(0, 1), parse=float),
    'sweep.ablations': rules.comma_list(rules.one_of('no_forget_teacher', 'no_remember_teacher')),
    'sweep.seeds': rules.comma_list(rules.NON_NEGATIVE_INT, parse=int),
    'eval.batch_size': rules.POSITIVE_INT, 'eval.noise_floor': rules.BOOLEAN,
    'eval.trajectory_every': rules.NON_NEGATIVE_INT, 'eval.trajectory_test_samples': rules.POSITIVE_INT,
    'eval.ranking_negatives': rules.NON_NEGATIVE_INT, 'eval.ranking_k': rules.POSITIVE_INT,
    'eval.ranking_max_positives': rules.NON_NEGATIVE_INT,
    'eval.relearn.enabled': rules.BOOLEAN,
    'eval.relearn.steps': rules.comma_list(rules.POSITIVE_INT, parse=int, nonempty=True),
    'eval.relearn.samples': rules.Rule(lambda x: rules.number(0, 1, low_open=True, high_open=True)(x) is None or (
        rules.number(1)(x) is None and float(x).is_integer()),
        'a share of the forget set (0 < x < 1) or a count of samples (a whole number >= 1)'),
    'eval.relearn.settings': rules.comma_list(rules.one_of('forget', 'retain'), nonempty=True),
    'eval.relearn.learning_rate': rules.NON_NEGATIVE, 'eval.relearn.batch_size': rules.NON_NEGATIVE_INT,
    'sequence.requests': rules.POSITIVE_INT, 'sequence.fraction': rules.number(0, 1, low_open=True, high_open=True),
    'sequence.retrain_every': rules.POSITIVE_INT,
    'mesh.model_axis': rules.POSITIVE_INT,
    'checkpoint.every_steps': rules.POSITIVE_INT, 'checkpoint.max_to_keep': rules.POSITIVE_INT,
    # configs/bench.py's section (the `bench` command).
    'bench.size': rules.one_of(*names.BENCH_SIZES), 'bench.batch': rules.POSITIVE_INT,
    'bench.seq': rules.POSITIVE_INT, 'bench.steps': rules.POSITIVE_INT, 'bench.warmup': rules.NON_NEGATIVE_INT,
    'bench.dtype': rules.one_of('auto', 'float32', 'bfloat16'), 'bench.reference': rules.BOOLEAN,
    'bench.reference_steps': rules.POSITIVE_INT, 'bench.vocab': rules.NON_NEGATIVE_INT,
    # bench.what: _method_rules (the methods' steps, MethodSpec.bench)
    'bench.profile': rules.TEXT,
}


def _method_rules() -> dict:
  method_names = method_spec.names()
  helpers = tuple(h.name for h in method_spec.helpers() if h.mode_key)
  lora_phases = INIT_PHASES + helpers + tuple(s.name for s in method_spec.specs() if s.trainable == 'lora')
  out = {'unlearn.method': rules.one_of(*method_names),
         'lora.init_phases': rules.comma_list(rules.one_of(*lora_phases), nonempty=True),
         'unlearn.methods': rules.comma_list(rules.one_of(*method_names), nonempty=True),
         'sequence.methods': rules.comma_list(rules.one_of(*method_spec.chainable()), nonempty=True),
         'bench.what': rules.comma_list(rules.one_of(*[f'{s.name}_step' for s in method_spec.specs() if s.bench],
                                                     'train_step', 'eval'), nonempty=True, separators=',+')}
  for spec in method_spec.specs():
    out.update({f'unlearn.{spec.name}.{k}': r for k, r in spec.field_rules().items()})
  return out


def field_rules() -> dict:
  """path -> rule for every field a config may have (the methods' sections included)."""
  return {**RULES, **_method_rules()}


def _leaves(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def validate(config) -> None:
  """UserError naming the first field whose value cannot work, with the values it accepts.

  Checks every field that has a rule (field_rules) and the fields that depend on each other."""
  known = field_rules()
  for path, value in _leaves(config):
    rule = known.get(path)
    wants = rule(value) if rule is not None else None
    if wants is not None:
      raise UserError(f'config.{path}={value!r}: must be {wants}')
  seeds = experiment_seeds(config)
  if len(set(seeds)) != len(seeds):
    raise UserError(f'config.seeds={config.seeds!r}: a seed appears twice; list each once')
  method_names = method_spec.names()
  for name in rules.split_list(config.repeat_methods):
    if name not in method_names:
      raise UserError(f'config.repeat_methods: unknown method {name!r}; choose from {", ".join(method_names)}')
  split = tuple(config.data.split)
  if abs(sum(split) - 1.0) > 1e-6:
    raise UserError(f'config.data.split={split!r}: the three fractions must sum to 1 (train, valid, test)')
  _check_init_phases(config)
  if config.data.forget_selection != 'random' and config.data.protocol == 'paper':
    raise UserError(f"config.data.forget_selection={config.data.forget_selection!r} needs config.data.protocol="
                    "'default' (the paper's draws are random); set one of them back")
  if config.data.forget_unit != 'user' and config.data.protocol == 'paper':
    raise UserError(f"config.data.forget_unit={config.data.forget_unit!r} needs config.data.protocol='default' "
                    "(the paper's draws forget whole users); set one of them back")
  if config.data.profile_zip and (config.data.protocol == 'paper' or config.data.source not in MOVIELENS_PROFILES):
    raise UserError(f"config.data.profile_zip=True needs a MovieLens profile ({', '.join(MOVIELENS_PROFILES)}) and "
                    f"config.data.protocol='default' (here source {config.data.source!r}, protocol "
                    f"{config.data.protocol!r}); set it back to False")
  if config.pretrain.enabled:
    check_pretrain(config)
  problem = None if config.model.name_or_path else names.scratch_problem(config.model.scratch)
  if problem:  # the family's own check of its scratch settings (a Llama's heads), the one models/ runs
    raise UserError(f'config.model.scratch: {problem}')


def experiment_seeds(config) -> list:
  """The seeds `run` repeats the experiment over: config.seeds, or [config.seed]."""
  listed = [int(x) for x in rules.split_list(config.get('seeds', '') or '')]
  return listed or [int(config.seed)]
def _check_init_phases(config) -> None:
  """lora.init_from: a folder, and every phase of lora.init_phases one that trains adapters here."""
  lo = config.lora
  if not lo.init_from:
    return
  if not storage.exists(storage.join(lo.init_from, 'adapter_config.json')):
    raise UserError(f'config.lora.init_from={lo.init_from!r}: no adapter_config.json there; pass a folder '
                    'written by PeftModel.save_pretrained (or `export --format=peft`)')
  modes = {phase: ('train.mode', config.train.mode) for phase in INIT_PHASES}
  for helper in method_spec.helpers():
    if helper.mode_key:
      section, field = helper.mode_key.split('.')
      modes[helper.name] = (helper.mode_key, config[section][field])
  for phase in rules.split_list(lo.init_phases):
    if phase in modes and modes[phase][1] != 'lora':
      key, mode = modes[phase]
      raise UserError(f'config.lora.init_phases={lo.init_phases!r}: {phase} trains full weights here '
                      f'(config.{key}={mode!r}), so it has no adapters to start from lora.init_from; '
                      f'drop it or pass --config.{key}=lora')


def load_saved(workdir: str):
  """The config a run was prepared with (<workdir>/config.json, over today's defaults), or None."""
  path = storage.join(workdir, 'config.json')
  if not storage.exists(path):
    return None
  fix = 'restore it from a copy, or pass --config=FILE (the config the run was made with)'
  try:
    values = runtime.read_json(path)
  except ValueError as e:  # truncated or not JSON (UnicodeDecodeError included)
    raise UserError(f'{path} is not valid JSON ({str(e).splitlines()[0][:120]}); {fix}') from None
  except OSError as e:
    raise UserError(f'{path} cannot be read ({e.strerror or e}); {fix}') from None
  config = default_config()
  _update(config, values, path, fix=fix)
  return config


def _update(config, values: dict, source: str, prefix: str = '', fix: str = 'fix it') -> None:
  if not isinstance(values, dict):
    where = f'config key {prefix[:-1]!r}' if prefix else 'the file'
    raise UserError(f'{source}: {where} holds {type(values).__name__} {_short(values)} where a section '
                    f'({{"key": value, ...}}) belongs; {fix}')
  for key, value in values.items():
    if key not in config:
      raise UserError(f'{source}: unknown config key {prefix + key!r}; remove it or fix its name')
    if isinstance(config[key], ConfigDict):
      _update(config[key], value, source, prefix + key + '.', fix)
      continue
    try:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value
    except (TypeError, ValueError):
      raise UserError(f'{source}: config key {prefix + key!r} holds {type(value).__name__} {_short(value)} where '
                      f'{type(config[key]).__name__} belongs (default {config[key]!r}); {fix}') from None


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:60] + f'... ({len(text)} characters)'


def paper_proportions(c: ConfigDict, e2urec_steps: int) -> ConfigDict:
  """E2URec's steps and the baselines' in the paper's proportions (E2URec 1000 : NegGrad 3000 :
  Bad-T 2400), GA and NPO at this project's choice (GA 300, NPO 1000 for E2URec's
  1000: neither is in the paper), and the baselines' learning rate at the paper's ratio to the
  training rate (5e-5 vs 5e-4): a scaled-down experiment keeps the paper's comparison."""
  c.unlearn.e2urec.steps = e2urec_steps
  c.unlearn.neggrad.steps = 3 * e2urec_steps
  c.unlearn.badt.steps = 12 * e2urec_steps // 5
  c.unlearn.ga.steps = 3 * e2urec_steps // 10
  c.unlearn.npo.steps = e2urec_steps
  for name in ('neggrad', 'badt', 'ga', 'npo'):
    c.unlearn[name].learning_rate = c.train.learning_rate / 10
  return c


def paper_recipe(c: ConfigDict) -> ConfigDict:
  """The original code's experiment (justarter/E2URec): its data protocol and prompt, a
  full-parameter augmented model, and its training recipe (normal_train.py): batch 32, one
  valid-loss check an epoch, early stopping after 3 checks in a row without a better valid loss
  (patience 2 here, see train.patience), torch AdamW's default weight decay 0.01 and no
  gradient clipping in every phase (training, the augmented model, the unlearning methods).

  Epoch cap: the original's 100 (`--epochs 100`). Early stopping ends these runs (the
  fine-tuned T5 stops improving its valid loss within a few epochs), so the cap binds only a run
  whose valid loss keeps improving; a lower one would change the experiment exactly there, and
  done.json's `stopped_early` tells whether it bound. Lower it (`--config.train.epochs`) to
  bound the cost of a budgeted run. docs/PAPER.md lists what still differs."""
  c.data.protocol = 'paper'
  c.data.max_input_length = 512  # the original truncates at 512 T5 tokens; its prompts fit
  c.data.bucket_lengths = (192, 256, 320, 512)
  c.augment.mode = 'full'  # finetune_aug.py: AdamW on every weight of a copy of the original
  c.train.batch_size = 32
  c.train.epochs = 100
  c.train.eval_every = 0  # once an epoch
  c.train.patience = 2  # the original's endure_times 3: it stops at the 3rd check without improvement
  c.train.warmup_steps = 0
  for section in (c.train, c.augment, c.unlearn):
    section.weight_decay = 0.01  # torch.optim.AdamW's default, which every script of the original uses
    section.max_grad_norm = 0.0  # the original never clips
  return c
