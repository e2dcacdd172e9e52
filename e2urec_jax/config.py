"""The default experiment configuration: every field, with what it means.

Config files under `configs/` start from `default_config()` and change only what
differs (big_vision style); a field that is not here does not exist, so a typo in
`--config.x.y=...` is an error rather than a silently ignored setting.
Defaults are the paper's (E2URec, arXiv 2403.03536) and its original code's.
"""
import ml_collections

ConfigDict = ml_collections.ConfigDict

ALL_METHODS = ('e2urec', 'neggrad', 'badt', 'sisa', 'receraser', 'ga', 'npo')


def default_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 42  # Master seed: forget-user draw, shard split, model init, data order.
  c.jax_cache_dir = '~/.cache/e2urec_jax/xla'  # Persistent XLA compilation cache; '' turns it off.
  c.progress = True  # tqdm progress bars on long work.

  # ---------------------------------------------------------------- data
  c.data = d = ConfigDict()
  d.source = 'synthetic'  # 'synthetic' | 'ml-100k' | 'ml-1m' | 'goodreads' | 'csv'.
  d.raw_dir = ''  # Local copy of the raw files; '' = download (checksummed) into download_dir.
  d.download_dir = '~/.cache/e2urec_jax/raw'  # Where downloads land (never inside the repo).
  d.label_threshold = 3.0  # label = rating > threshold (MovieLens: > 3 is "liked").
  d.history_k = 10  # Most recent rated items shown in the prompt.
  d.min_history = 5  # Samples with fewer earlier ratings of the same user are dropped.
  d.num_samples = 100_000  # Keep the last N samples in global time order.
  d.split = (0.6, 0.2, 0.2)  # train/valid/test fractions, in time order.
  d.forget_fraction = 0.2  # Fraction of train users whose train samples form the forget set.
  d.num_shards = 4  # SISA random shards and RecEraser user shards.
  d.max_input_length = 256  # Prompt tokens at most; history is truncated first, never target/question.
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
  t.item_col = 'item_id'
  t.rating_col = 'rating'
  t.time_col = 'timestamp'
  t.title_col = 'title'
  t.item_noun = 'item'  # Word used in the prompt ("movie", "book", "product").

  # --------------------------------------------------------------- model
  c.model = m = ConfigDict()
  m.name_or_path = ''  # Hugging Face folder or hub id (t5-base, Qwen/...); '' = build model.scratch.
  m.tokenizer = ''  # '' = the model's own tokenizer; 'train' = train one on the prompts (scratch models).
  m.tokenizer_vocab_size = 2000  # Vocabulary of a tokenizer trained on the fly.
  m.scratch = sc = ConfigDict()  # A randomly initialised model (the demo, tests, benchmarks).
  sc.family = 't5'  # 't5' | 'llama'.
  sc.d_model = 64
  sc.num_layers = 2  # Encoder layers (and decoder layers for T5).
  sc.num_heads = 4
  sc.num_kv_heads = 2  # Llama GQA key/value heads.
  sc.d_ff = 256
  sc.d_kv = 16  # Per-head width (T5).
  sc.feed_forward_proj = 'relu'  # T5 v1.0 'relu' or v1.1 'gated-gelu'.
  m.dtype = 'float32'  # Compute dtype; 'bfloat16' on GPU/TPU. Losses are always fp32.
  m.base_dtype = 'float32'  # Storage dtype of the frozen base ('bfloat16' to fit large models).
  m.dropout = 0.1  # Model dropout while training (T5's dropout_rate).
  m.remat = False  # Rematerialise each layer in the backward pass (memory for compute).

  # ----------------------------------------------------------- LoRA
  c.lora = lo = ConfigDict()  # Adapters of the E2URec student (and LoRA training elsewhere).
  lo.r = 16  # Rank.
  lo.alpha = 32.0  # lora_alpha; adapters are scaled by alpha / r.
  lo.dropout = 0.05  # Dropout on the adapter input.
  lo.targets = ''  # Comma-separated module names; '' = family default (T5 'q,v'; Llama 'q_proj,v_proj').

  # ---------------------------------------- original model and retrain recipe
  c.train = tr = ConfigDict()  # Instruction tuning of the LLMRec on train (original) or retain (retrain).
  tr.mode = 'full'  # 'full' fine-tuning (paper, T5) or 'lora' (decoder LLMs; merged into the original).
  tr.learning_rate = 5e-4
  tr.weight_decay = 0.0  # AdamW weight decay.
  tr.batch_size = 16
  tr.epochs = 5  # Passes over the split at most.
  tr.max_steps = 0  # > 0 caps the steps (for small configs).
  tr.eval_every = 0  # Steps between valid-loss checks; 0 = once an epoch.
  tr.patience = 2  # Stop after this many checks without a better valid loss.
  tr.warmup_steps = 0  # Linear warm-up steps.

  # --------------------------------------------------------- augmented model
  c.augment = au = ConfigDict()  # The original fine-tuned on the forget set (E2URec's theta_a).
  au.mode = 'lora'  # 'lora' (shares the frozen base) or 'full' (as in the paper).
  au.learning_rate = 5e-5
  au.steps = 1200
  au.batch_size = 16

  # ------------------------------------------------------------- unlearning
  c.unlearn = un = ConfigDict()
  un.method = 'e2urec'  # Method of the `unlearn` command.
  un.methods = ','.join(ALL_METHODS)  # Methods `run` executes, comma-separated.
  un.e2urec = e = ConfigDict()
  e.learning_rate = 1e-3
  e.batch_size = 16  # Retain and forget samples per step, each.
  e.w = 0.6  # Weight of the remembering part; 1 - w on forgetting.
  e.alpha = 2.0  # Forgetting-teacher strength: orig - alpha * relu(aug - orig).
  e.steps = 1000  # Steps in all (the original code's chosen checkpoint).
  e.forget_epochs = 1  # Forget-only warm-up epochs (an epoch = |D_f| / batch steps).
  e.use_forget_teacher = True  # Ablation switch: False distils the forget set from the original.
  e.use_remember_teacher = True  # Ablation switch: False drops the retain KD term.
  un.neggrad = ng = ConfigDict()  # retain CE - weight * forget CE, full parameters.
  ng.learning_rate = 5e-5
  ng.steps = 3000
  ng.batch_size = 16
  ng.weight = 0.2
  un.badt = bt = ConfigDict()  # retain CE + weight * CE on the forget set with flipped answers.
  bt.learning_rate = 5e-5
  bt.steps = 2400
  bt.batch_size = 16
  bt.weight = 0.2
  un.ga = ga = ConfigDict()  # Pure gradient ascent on the forget set.
  ga.learning_rate = 5e-5
  ga.steps = 300
  ga.batch_size = 16
  un.npo = npo = ConfigDict()  # Negative preference optimisation + retain CE.
  npo.learning_rate = 5e-5
  npo.steps = 1000
  npo.batch_size = 16
  npo.beta = 0.1
  npo.retain_weight = 1.0
  un.sisa = ConfigDict()  # Shard models use the train recipe (c.train).
  un.sisa.aggregate = 'mean'  # Average of the shards' logits, as the original evaluates it.
  un.receraser = ConfigDict()
  un.receraser.aggregate = 'attention'  # 'attention' (learned on retained data) or 'mean'.
  un.receraser.attention_steps = 200  # Steps training the aggregation weights.

  # ------------------------------------------------------- sweeps/ablations
  c.sweep = sw = ConfigDict()  # Extra E2URec rows in the report (empty = none).
  sw.alphas = ''  # e.g. '0.5,1,4': one e2urec row per alpha.
  sw.ws = ''  # e.g. '0.3,0.8': one e2urec row per w.
  sw.ablations = ''  # 'no_forget_teacher,no_remember_teacher'.
  sw.seeds = ''  # e.g. '1,2': repeat the unlearning methods per seed; report mean and spread.

  # ------------------------------------------------------------ evaluation
  c.eval = ev = ConfigDict()
  ev.batch_size = 64
  ev.noise_floor = True  # Train a second retrain (seed + 1) to measure the retrain-vs-retrain distance.

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
  ck.max_to_keep = 2
  return c


def paper_proportions(c: ConfigDict, e2urec_steps: int) -> ConfigDict:
  """E2URec's steps and the baselines' in the paper's proportions (E2URec 1000 : NegGrad 3000 :
  Bad-T 2400 : GA 300 : NPO 1000), and the baselines' learning rate at the paper's ratio to
  the training rate (5e-5 vs 5e-4): a scaled-down experiment keeps the paper's comparison."""
  c.unlearn.e2urec.steps = e2urec_steps
  c.unlearn.neggrad.steps = 3 * e2urec_steps
  c.unlearn.badt.steps = 12 * e2urec_steps // 5
  c.unlearn.ga.steps = 3 * e2urec_steps // 10
  c.unlearn.npo.steps = e2urec_steps
  for name in ('neggrad', 'badt', 'ga', 'npo'):
    c.unlearn[name].learning_rate = c.train.learning_rate / 10
  return c


def shrink(c: ConfigDict, steps: int = 40, batch: int = 8) -> ConfigDict:
  """A `runlocal`-style switch: same experiment, every phase cut short (tests, smoke runs)."""
  c.train.epochs = 1
  c.train.max_steps = steps
  c.train.batch_size = batch
  c.augment.steps = steps // 2
  c.augment.batch_size = batch
  for name in ('e2urec', 'neggrad', 'badt', 'ga', 'npo'):
    c.unlearn[name].steps = steps
    c.unlearn[name].batch_size = batch
  c.unlearn.receraser.attention_steps = 10
  c.eval.batch_size = 32
  c.checkpoint.every_steps = 10 * steps
  return c
