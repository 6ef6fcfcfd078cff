r"""Draw a training run's curves from its workdir into one PNG.

  python launch/plot.py --workdir=DIR --output=FILE.png [--title=TEXT]

Panels, each from `DIR/metrics.jsonl` (one JSON object a step, as launch/train.py writes it):
reward (mean, with +-1 std) and held-out accuracy; response length (mean, min-max band);
entropy; KL (`actor/ppo_kl`, and `actor/kl_to_ref` with a reference model); gradient norms
(actor, and critic with GAE); step time. Held-out accuracy comes from launch/evaluate.py reports
under `DIR/eval/*.json` (their "step": 0 for the model before training) and from any
`eval/.../accuracy` key in metrics.jsonl. A panel whose keys were not logged says so.

`--layout=rlhf` (a PPO run against a reward model, docs/rlhf.md) draws three panels instead: the
RM score (train, mean per step) and the held-out ground-truth accuracy on one chart (two axes,
so a policy that games the RM shows as the two parting); KL to the reference; the critic's loss
and its explained variance, `1 - 2 vf_loss / Var(score)` (exact for gamma = lam = 1 and no KL in
the reward, where every token's return is the sequence's score; a lower bound with value clipping).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from absl import app, flags

from grlo_jax.data import jsonl

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds metrics.jsonl).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "PNG to write; default WORKDIR/curves.png.")
_TITLE = flags.DEFINE_string("title", None, "Figure title; default: the workdir's name.")
_DPI = flags.DEFINE_integer("dpi", 110, "Resolution of the PNG.", lower_bound=30)
_LAYOUT = flags.DEFINE_enum("layout", "default", ["default", "rlhf"], "Panels: the default six, or "
                            "rlhf (RM score beside held-out accuracy, KL, critic).")


def read_metrics(path: pathlib.Path) -> list[dict]:
  """The step records of a metrics.jsonl, in step order (a resumed run's repeats: the last wins)."""
  by_step = {}
  for where, _, record in jsonl.iter_jsonl(path):
    if not isinstance(record, dict) or "step" not in record:
      raise ValueError(f"{where}: no 'step' key")
    by_step[int(record["step"])] = record
  return [by_step[s] for s in sorted(by_step)]


def held_out(workdir: pathlib.Path, rows: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
  """{benchmark: [(step, accuracy)]} from evaluate.py reports in `eval/` and eval/ metrics."""
  out: dict[str, dict[int, float]] = {}
  for report_path in sorted((workdir / "eval").glob("*.json")):
    try:
      report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise ValueError(f"{report_path}: not JSON ({e.msg})") from None
    if "step" not in report:
      continue  # a report of no training step (written before evaluate.py recorded it)
    for name, summary in report.get("benchmarks", {}).items():
      if "accuracy" in summary:
        out.setdefault(name, {})[int(report["step"])] = float(summary["accuracy"])
  for r in rows:
    for k, v in r.items():
      if k.startswith("eval/") and k.endswith("/accuracy") and v is not None:
        out.setdefault(k[len("eval/"):-len("/accuracy")], {})[int(r["step"])] = float(v)
  return {name: sorted(points.items()) for name, points in out.items()}


def _series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
  pts = [(r["step"], float(r[key])) for r in rows if r.get(key) is not None]
  return [s for s, _ in pts], [v for _, v in pts]


def plot(workdir: pathlib.Path, output: pathlib.Path, title: str | None = None, dpi: int = 110) -> list[str]:
  """Writes the PNG; returns the panels drawn with data."""
  import matplotlib  # lazy: only plotting needs it

  matplotlib.use("Agg")  # no display
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  rows, accuracy = _workdir_rows(workdir)
  fig, axes = plt.subplots(2, 3, figsize=(15, 8.2), constrained_layout=True)
  drawn = []

  def panel(ax, name: str, curves: Sequence[tuple[str, str]], ylabel: str, band=None, log=False):
    has = False
    for key, label in curves:
      steps, values = _series(rows, key)
      if steps:
        ax.plot(steps, values, marker="o", markersize=3, linewidth=1.6, label=label)
        has = True
    if band is not None:
      lo_key, hi_key = band
      steps, lo = _series(rows, lo_key)
      _, hi = _series(rows, hi_key)
      if steps and len(lo) == len(hi):
        ax.fill_between(steps, lo, hi, alpha=0.2, linewidth=0)
    ax.set_title(name, fontsize=12)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if log and has:
      ax.set_yscale("log")
    if not has:
      ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    else:
      drawn.append(name)
    return has

  ax = axes[0, 0]
  steps, mean = _series(rows, "reward/mean")
  _, std = _series(rows, "reward/std")
  if steps:
    ax.plot(steps, mean, marker="o", markersize=3, linewidth=1.6, label="train reward (mean)")
    if len(std) == len(mean):
      ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                      alpha=0.15, linewidth=0, label="+-1 std")
  for name, points in accuracy.items():
    ax.plot([s for s, _ in points], [a for _, a in points], marker="s", markersize=7, linewidth=2,
            linestyle="--", label=f"held-out accuracy ({name})")
    for s, a in points:
      ax.annotate(f"{100 * a:.1f}%", (s, a), textcoords="offset points", xytext=(4, 6), fontsize=10)
  ax.set_title("reward and held-out accuracy", fontsize=12)
  ax.set_xlabel("step")
  ax.set_ylim(min(-0.05, *(m - s for m, s in zip(mean, std))) if steps and len(std) == len(mean) else -0.05,
              1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9, loc="upper left")
  if steps or accuracy:
    drawn.append("reward")

  panel(axes[0, 1], "response length (tokens)", [("response_length/mean", "mean")], "tokens",
        band=("response_length/min", "response_length/max"))
  panel(axes[0, 2], "policy entropy", [("actor/entropy", "actor/entropy")], "nats / token")
  panel(axes[1, 0], "KL", [("actor/ppo_kl", "old -> new policy (ppo_kl)"),
                           ("actor/kl_to_ref", "policy -> reference")], "nats / token")
  panel(axes[1, 1], "gradient norm (before clipping)", [("actor/grad_norm", "actor"),
                                                        ("critic/grad_norm", "critic")], "L2 norm")
  panel(axes[1, 2], "step time", [("time/step_s", "seconds")], "seconds")
  for ax in (axes[0, 1], axes[1, 0], axes[1, 1]):
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=9)
  for ax in axes.flat:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.suptitle(title or workdir.name, fontsize=14)
  output.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(output, dpi=dpi)
  plt.close(fig)
  return drawn


def _workdir_rows(workdir: pathlib.Path) -> tuple[list[dict], dict[str, list[tuple[int, float]]]]:
  """The workdir's logged steps and its held-out evaluations; errors name what is missing."""
  metrics = workdir / "metrics.jsonl"
  if not metrics.is_file():
    raise FileNotFoundError(f"{workdir}: no metrics.jsonl (is it a launch/train.py workdir?)")
  rows = read_metrics(metrics)
  if not rows:
    raise ValueError(f"{metrics}: no steps logged yet")
  return rows, held_out(workdir, rows)


def explained_variance(rows: Sequence[dict]) -> tuple[list[int], list[float]]:
  """Per step, the step's own `critic/vf_explained_var` (verl's) where it logged one, else
  1 - 2 critic/vf_loss / reward/std^2 (see the module docstring; runs from before the metric)."""
  logged = [(r["step"], float(r["critic/vf_explained_var"])) for r in rows if r.get("critic/vf_explained_var") is not None]
  if logged:
    return [s for s, _ in logged], [v for _, v in logged]
  pts = [(r["step"], 1.0 - 2.0 * float(r["critic/vf_loss"]) / float(r["reward/std"]) ** 2) for r in rows
         if r.get("critic/vf_loss") is not None and float(r.get("reward/std") or 0.0) > 1e-6]
  return [s for s, _ in pts], [v for _, v in pts]


def plot_rlhf(workdir: pathlib.Path, output: pathlib.Path, title: str | None = None, dpi: int = 110) -> list[str]:
  """The `--layout=rlhf` figure; returns the panels drawn with data."""
  import matplotlib  # lazy: only plotting needs it

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.ticker import MaxNLocator

  rows, accuracy = _workdir_rows(workdir)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
  drawn = []
  ax = axes[0]
  steps, score = _series(rows, "reward/mean")
  ax.plot(steps, score, marker="o", markersize=3, linewidth=1.6, color="tab:blue", label="RM score (train mean)")
  ax.set_ylabel("RM score", color="tab:blue")
  ax.set_xlabel("step")
  ax.grid(alpha=0.3)
  acc_ax = ax.twinx()
  for name, points in accuracy.items():
    acc_ax.plot([s for s, _ in points], [100 * a for _, a in points], marker="s", markersize=7, linewidth=2,
                linestyle="--", color="tab:red", label=f"held-out accuracy ({name})")
    for s, a in points:
      acc_ax.annotate(f"{100 * a:.1f}%", (s, 100 * a), textcoords="offset points", xytext=(4, 6), fontsize=9)
  acc_ax.set_ylabel("held-out accuracy (%)", color="tab:red")
  acc_ax.set_ylim(0, 100)
  handles = ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
  labels = ax.get_legend_handles_labels()[1] + acc_ax.get_legend_handles_labels()[1]
  ax.legend(handles, labels, fontsize=8, loc="upper left")
  ax.set_title("RM score and ground truth", fontsize=12)
  drawn.append("score")
  ax = axes[1]
  for key, label in (("actor/kl_to_ref", "policy -> reference"), ("actor/kl_loss", "KL loss (low_var_kl)")):
    st, v = _series(rows, key)
    if st:
      ax.plot(st, v, marker="o", markersize=3, linewidth=1.6, label=label)
      drawn.append(key)
  ax.set_title("KL to the reference", fontsize=12)
  ax.set_xlabel("step")
  ax.set_ylabel("nats / token")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax = axes[2]
  st, v = _series(rows, "critic/vf_loss")
  ax.plot(st, v, marker="o", markersize=3, linewidth=1.6, color="tab:green", label="critic loss (vf_loss)")
  ax.set_ylabel("vf_loss", color="tab:green")
  ax.set_xlabel("step")
  ax.grid(alpha=0.3)
  ev_ax = ax.twinx()
  st, ev = explained_variance(rows)
  ev_ax.plot(st, ev, marker="^", markersize=4, linewidth=1.4, color="tab:purple", label="explained variance")
  ev_ax.set_ylabel("explained variance", color="tab:purple")
  handles = ax.get_legend_handles_labels()[0] + ev_ax.get_legend_handles_labels()[0]
  labels = ax.get_legend_handles_labels()[1] + ev_ax.get_legend_handles_labels()[1]
  ax.legend(handles, labels, fontsize=8, loc="upper right")
  ax.set_title("critic", fontsize=12)
  drawn.append("critic")
  for a in axes:
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.suptitle(title or workdir.name, fontsize=13)
  output.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(output, dpi=dpi)
  plt.close(fig)
  return drawn


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  output = pathlib.Path(_OUTPUT.value) if _OUTPUT.value else workdir / "curves.png"
  try:
    drawn = (plot_rlhf if _LAYOUT.value == "rlhf" else plot)(workdir, output, _TITLE.value, _DPI.value)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  print(f"wrote {output} ({', '.join(drawn)})")


if __name__ == "__main__":
  app.run(main)
