"""The report's plots (matplotlib's object API on the Agg canvas: no pyplot global state, no display):
distance to retrain vs cost, and test AUC per method. `write_png` writes any of them (and the
seed report's and the sequence's) whole.
"""
import io

import numpy as np

from e2urec_jax import storage
from e2urec_jax.eval import report_schema as schema
from e2urec_jax.train import registry


def new_figure():
  """The report's figure size and resolution."""
  from matplotlib.figure import Figure  # heavy: matplotlib
  return Figure(figsize=(7, 4.5), dpi=110, layout='constrained')


def write_png(path: str, fig) -> None:
  """`fig` as a PNG at `path`, written whole (storage.write_bytes: temp file + rename, or one object write)."""
  storage.write_bytes(path, png_bytes(fig))


def png_bytes(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  return buffer.getvalue()


def plot_distance_vs_time(results, order=()):
  """Forget-set symKL (the paper's "JSD") to the retrained model against time (log x): filled
  markers at the whole cost (time_s), open ones at the unlearning loop alone (unlearn_time_s)."""
  fig = new_figure()
  ax = fig.add_subplot()
  methods = results.get('methods', {})
  xs = []
  has_loop = False
  for name in schema.ordered_methods(methods, order):
    entry = methods[name] if isinstance(methods[name], dict) else {}
    t, d = schema.cell_values(entry, ('time_s',)), schema.cell_values(entry, ('forget', 'sym_kl'))
    loop = schema.cell_values(entry, ('unlearn_time_s',))
    if name == 'original' and d:  # No unlearning at all: the level to get below.
      ax.axhline(np.mean(d), color='gray', ls=':', lw=1, label='original (no unlearning)')
    elif name == 'retrain' and t:  # The gold standard: its cost is the one to beat.
      ax.axvline(np.mean(t), color='gray', ls='-.', lw=1, label='retrain: whole cost')
      if loop and np.mean(loop) > 0:
        ax.axvline(np.mean(loop), color='silver', ls='-.', lw=1, label='retrain: training loop')
    elif t and d and np.mean(t) > 0:
      x, y = float(np.mean(t)), float(np.mean(d))
      xs.append(x)
      color = 'tab:red' if registry.is_featured_row(name) else 'tab:blue'
      ax.plot([x], [y], 'o', color=color)
      if loop and 0 < np.mean(loop) < x:
        ax.plot([float(np.mean(loop)), x], [y, y], '-', color=color, lw=0.8, alpha=0.5)
        ax.plot([float(np.mean(loop))], [y], 'o', mfc='none', color=color)
        has_loop = True
      ax.annotate(name, (x, y), textcoords='offset points', xytext=(5, 4), fontsize=8)
  if xs:  # legend entries for the two markers
    ax.plot([], [], 'o', color='dimgray', label='method: whole cost')
    if has_loop:
      ax.plot([], [], 'o', mfc='none', color='dimgray', label='method: unlearning loop alone')
  floor = (results.get('noise_floor') or {}).get('sym_kl')
  if schema.is_number(floor):
    ax.axhline(float(floor), color='green', ls='--', lw=1, label='noise floor (retrain vs retrain)')
  if xs or ax.lines:
    from matplotlib.ticker import FuncFormatter  # heavy: matplotlib
    ax.set_xscale('log')  # plain numbers at 1, 2, 5 x 10^k: readable over a narrow range too
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f'{x:g}'))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f'{x:g}' if f'{x:.0e}'[0] in '25' else ''))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc='best')
  else:
    ax.text(0.5, 0.5, 'no methods with both time and distance', ha='center', transform=ax.transAxes)
  ax.set_xlabel('time (s, log scale): whole cost (filled), unlearning loop (open)')
  ax.set_ylabel(f'forget-set {schema.SYM_KL_NAME}\nto the retrained model')
  ax.set_title('Distance to retrain vs cost')
  return fig


def plot_test_auc(results, order=()):
  """Test AUC per method, with the seed std as error bars and the original as a line."""
  fig = new_figure()
  ax = fig.add_subplot()
  methods = results.get('methods', {})
  names, means, errs = [], [], []
  for name in schema.ordered_methods(methods, order):
    values = schema.cell_values(methods[name] if isinstance(methods[name], dict) else {}, ('test', 'auc'))
    if values:
      names.append(name)
      means.append(float(np.mean(values)))
      errs.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
  if names:
    colors = ['tab:red' if registry.is_featured_row(n) else 'tab:gray' if n in ('original', 'retrain')
              else 'tab:blue' for n in names]
    ax.bar(range(len(names)), means, yerr=errs if any(errs) else None, color=colors, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right', fontsize=8)
    low, high = min(means) - max(errs) - 0.05, max(means) + max(errs) + 0.03
    ax.set_ylim(max(0.0, low), min(1.0, high))
    if 'original' in names:
      ax.axhline(means[names.index('original')], color='black', ls='--', lw=1, label='original')
      ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, 'no test AUC', ha='center', transform=ax.transAxes)
  ax.set_ylabel('test AUC')
  ax.set_title('Test AUC per method')
  return fig
