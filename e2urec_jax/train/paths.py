"""Where a run's phases and models live (`Paths`), and which model unlearning starts from.

An experiment's workdir has one layout (`run_paths`); a forget request builds other `Paths`
(its own phase folders, the model it starts from, the folder of its result) and runs the
same methods on them. Plain `os.path` (URLs too: storage.py): the CLI imports this before JAX.
"""
import dataclasses
import os

from e2urec_jax import storage

ORIGINAL = 'original'  # the model unlearning starts from, whichever folder `Paths.start` names


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where a run's phases and models live, and which model unlearning starts from.

  phase_dir(name): metrics, resume checkpoints and done.json of phase `name`.
  model_dir(name): the model phase `name` published; ORIGINAL is always `start`.
  """
  workdir: str
  phases: str  # root of the phase folders
  start: str  # folder of the model unlearning starts from
  train_start: bool  # True: `start` is this run's original, trained when missing; False: given (forget)
  models: str | None = None  # root of the model folders; None: a model sits in its phase folder (<phase>/model)
  published: tuple = ()  # (name, folder) pairs that override the rules above (a forget request's result)
  root: str | None = None  # folder of this seed's own scratch start (pretrained/); None: the workdir

  def phase_dir(self, name: str) -> str:
    return os.path.join(self.phases, name)

  def model_dir(self, name: str) -> str:
    if name == ORIGINAL:
      return self.start
    for published, folder in self.published:
      if name == published:
        return folder
    if self.models is None:
      return os.path.join(self.phase_dir(name), 'model')
    return os.path.join(self.models, name)

  @property
  def pretrained(self) -> str:
    """The common start of the original and the retrained model when it is built from scratch."""
    return os.path.join(self.root or self.workdir, 'pretrained')


def run_paths(workdir: str) -> Paths:
  """The layout of an experiment's workdir (docs/ARCHITECTURE.md, "Workdir layout")."""
  workdir = storage.abspath(workdir)
  return Paths(workdir=workdir, phases=os.path.join(workdir, 'phases'), models=os.path.join(workdir, 'models'),
               start=os.path.join(workdir, 'models', ORIGINAL), train_start=True)


SEEDS_DIR = 'seeds'  # <workdir>/seeds/<seed>/: every seed of config.seeds but the first


def seed_paths(workdir: str, seed: int) -> Paths:
  """The layout of one more seed of a run over several (config.seeds): the run's layout under
  <workdir>/seeds/<seed>/ (its phases, models and scratch start); data and tokenizer are shared."""
  workdir = storage.abspath(workdir)
  root = os.path.join(workdir, SEEDS_DIR, str(int(seed)))
  return Paths(workdir=workdir, phases=os.path.join(root, 'phases'), models=os.path.join(root, 'models'),
               start=os.path.join(root, 'models', ORIGINAL), train_start=True, root=root)
