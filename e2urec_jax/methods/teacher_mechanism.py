"""Why E2URec gets as close to the retrained model as it does: its teacher, measured (E2URec's
MethodSpec.diagnostic, and the report's section of it: `report_lines`).

E2URec's student follows the forgetting teacher orig - alpha * relu(aug - orig) on the forget
set. The student cannot end closer to the retrained model than what it follows lets it,
unless its own smoothing helps; so the report measures, on the forget set at the first answer
position (where Yes/No is decided):
- the distance to retrain of the original, the augmented model, the teacher and the student;
- the student's distillation loss to the teacher before unlearning (the student is then the
  original) and after: how much of the way to its teacher the optimisation went;
- the *alignment* of the teacher with what the original memorised. Along the true answer,
  delta = margin_orig - margin_retrain is the memorisation (how much surer the original is
  of a forget sample's answer than a model that never saw it), and rise = the augmented
  model's increase of the true answer's logit over the original's, which the teacher
  subtracts. The teacher can only remove memorisation where rise follows delta. Both are
  averaged per user (the student, a low-rank adapter, learns per-user corrections, not
  per-sample ones) and correlated over users, weighted by their sample counts.

Pure numpy on [N, V] logits; float64. The distances to retrain come from the evaluation (the
diagnostic's probe), so they are the report's own.
"""
import math

import numpy as np

from e2urec_jax import scoring


def forgetting_teacher(orig_logits, aug_logits, alpha: float) -> np.ndarray:
  """orig - alpha * relu(aug - orig), the same formula as `losses.forgetting_teacher_logits`.  # [N, V]"""
  orig = np.asarray(orig_logits, np.float64)
  aug = np.asarray(aug_logits, np.float64)
  return orig - float(alpha) * np.maximum(aug - orig, 0.0)


def distillation_loss(teacher_logits, student_logits) -> float:
  """KD(teacher -> student) = mean over rows of -sum_v softmax(teacher) log softmax(student),
  the training loss's per-position term (`losses.distillation_loss`)."""
  p = scoring.softmax(teacher_logits)
  return float(-(p * scoring.log_softmax(student_logits)).sum(-1).mean())


def answer_margin(logits, labels, yes_id: int, no_id: int) -> np.ndarray:
  """Log-odds of the true answer against the other one (Yes/No logits).  # [N]"""
  x = np.asarray(logits, np.float64)
  sign = np.where(np.asarray(labels) == 1, 1.0, -1.0)
  return sign * (x[:, yes_id] - x[:, no_id])


def _weighted_corr(x, y, w) -> float:
  w = w / w.sum()
  mx, my = (w * x).sum(), (w * y).sum()
  cov = (w * (x - mx) * (y - my)).sum()
  var = (w * (x - mx) ** 2).sum() * (w * (y - my) ** 2).sum()
  return float(cov / np.sqrt(var)) if var > 0 else float('nan')


def alignment(orig, retrain, aug, labels, users, yes_id: int, no_id: int) -> dict:
  """How well the teacher's correction follows the memorisation (see the module docstring).

  Returns {'user_corr', 'sample_corr', 'mean_delta', 'mean_rise', 'users'}."""
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  true_token = np.where(labels == 1, yes_id, no_id)
  delta = answer_margin(orig, labels, yes_id, no_id) - answer_margin(retrain, labels, yes_id, no_id)
  rise = np.maximum(np.asarray(aug, np.float64)[rows, true_token] - np.asarray(orig, np.float64)[rows, true_token], 0)
  ids, inverse, counts = np.unique(np.asarray(users), return_inverse=True, return_counts=True)
  delta_u = np.bincount(inverse, delta) / counts
  rise_u = np.bincount(inverse, rise) / counts
  sample_corr = float(np.corrcoef(delta, rise)[0, 1]) if len(delta) > 1 and delta.std() > 0 and rise.std() > 0 \
      else float('nan')
  return {'user_corr': _weighted_corr(delta_u, rise_u, counts.astype(np.float64)) if len(ids) > 1 else float('nan'),
          'sample_corr': sample_corr, 'mean_delta': float(delta.mean()), 'mean_rise': float(rise.mean()),
          'users': int(len(ids))}


def forgetting_teacher_mechanism(*, orig, retrain, aug, student, alpha: float, labels, users, yes_id: int,
                                 no_id: int, distance) -> dict:
  """The mechanism entry of one E2URec run: first-answer-position logits [N, V] of the forget set;
  `distance(logits)`: the distances ('sym_kl', 'jsd', ...) of those logits to `retrain`'s."""
  teacher = forgetting_teacher(orig, aug, alpha)
  out = {'alpha': float(alpha)}
  for name, logits in (('original', orig), ('augmented', aug), ('teacher', teacher), ('student', student)):
    d = distance(logits)
    out[name] = {'sym_kl': d['sym_kl'], 'jsd': d['jsd']}
  out['kd_to_teacher'] = {'start': distillation_loss(teacher, orig), 'end': distillation_loss(teacher, student),
                          'floor': distillation_loss(teacher, teacher)}  # the teacher's own entropy
  out['alignment'] = alignment(orig, retrain, aug, labels, users, yes_id, no_id)
  return out


def _fmt(x, digits=4):
  return '–' if x is None or not math.isfinite(float(x)) else f'{float(x):.{digits}g}'


def report_lines(entries: dict) -> list[str]:
  """The report's section (markdown lines) of E2URec's rows' mechanism entries ({row: entry})."""
  oracle = any(isinstance(m.get('oracle'), dict) for m in entries.values())  # an oracle row was run
  out = ['', '## E2URec\'s teacher, measured (forget set, first answer position)', '',
         'symKL to retrain of the original, the augmented model, the forgetting teacher '
         'orig − α·relu(aug − orig) and the student; KD: the student\'s distillation loss to the '
         'teacher before and after unlearning (floor: the teacher\'s entropy); user corr: over users, '
         'the correlation of what the original memorised with what the teacher removes.'
         + (' oracle: the same student distilled towards the retrained model on the forget set '
            '(methods/oracle.py), what a perfect forget target reaches.' if oracle else ''), '',
         '| row | α | original | augmented | teacher | student |' + (' oracle |' if oracle else '')
         + ' KD start → end (floor) | user corr |',
         '|---|---|---|---|---|---|---|---|' + ('---|' if oracle else '')]
  for name, m in entries.items():
    kd = m['kd_to_teacher']
    extra = f' {_fmt((m.get("oracle") or {}).get("sym_kl"))} |' if oracle else ''
    out.append(f'| `{name}` | {_fmt(m["alpha"], 3)} | {_fmt(m["original"]["sym_kl"])} | '
               f'{_fmt(m["augmented"]["sym_kl"])} | {_fmt(m["teacher"]["sym_kl"])} | '
               f'{_fmt(m["student"]["sym_kl"])} |{extra} {_fmt(kd["start"])} → {_fmt(kd["end"])} '
               f'({_fmt(kd["floor"])}) | {_fmt(m["alignment"]["user_corr"], 3)} |')
  return out
