r"""Evaluate a model on benchmarks, or grade given completions.

  python launch/evaluate.py --checkpoint=/models/Qwen3-4B-Base --benchmarks=math500,aime24 \
      --output=/tmp/eval.json [--num_samples=4 --temperature=0.6 --limit=50 --nochat]
  python launch/evaluate.py --predictions=preds.jsonl --benchmarks=math500 --output=/tmp/eval.json
  python launch/evaluate.py --checkpoint=models/smollm2 --records=arithmetic:test:200 \
      --max_new_tokens=48 --output=/tmp/before.json      # GRLO records with a ground truth

Writes OUT (`{"benchmarks": {name: {"accuracy", "n", "samples", "pass@1", ...}}}`), OUT's
name with `.md` (a Markdown table) and with `.items.jsonl` (per item: benchmark, id,
completions, correct, extracted; GPQA's completions left out). docs/evaluation.md has more.
`--verbosity=1` shows the libraries' INFO logs (Orbax, JAX) beside the progress lines.
"""

import json
import logging
import pathlib
from collections.abc import Sequence

import jax
from absl import app, flags

from grlo_jax import allocator, console, data, models
from grlo_jax import checkpoint as checkpoint_lib
from grlo_jax.eval import benchmarks as bm
from grlo_jax.eval import predictions as predictions_lib
from grlo_jax.eval import records as records_lib
from grlo_jax.eval import report as report_lib
from grlo_jax.eval import runner

log = logging.getLogger("grlo_jax.evaluate")

# The GRLO paper's benchmarks: the default set.
GRLO_BENCHMARKS = ("math500", "aime24", "aime25", "amc23", "minerva_math", "olympiadbench",
                   "gpqa_diamond", "humaneval", "mbpp")
DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "HF folder, Orbax model folder, or training checkpoint to sample from.")
_PREDICTIONS = flags.DEFINE_string(
    "predictions", None, "JSONL of {benchmark, id, completion} to grade instead (no model).")
_RECORDS = flags.DEFINE_list(
    "records", None, "Instead of --benchmarks: GRLO prompt-record files (.jsonl / .parquet) or synthetic "
    "sources (arithmetic:SPLIT[:N[:SEED]]), each graded as math against reward_model.ground_truth.")
_BENCHMARKS = flags.DEFINE_list(
    "benchmarks", None, f"Benchmarks; default: {','.join(GRLO_BENCHMARKS)} (with --predictions: "
    "those in the file).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", str(DEFAULT_DATA_DIR), "Folder of the benchmark files (or its parent).")
_OUTPUT = flags.DEFINE_string("output", None, "Report JSON; .md and .items.jsonl go beside it.",
                              required=True)
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "Tokenizer folder or 'tiny'; default: the checkpoint's, else 'tiny'.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Completions per item (pass@k for k > 1).",
                                    lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Top-k (0 = off).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 3072, "Tokens per completion at most.",
                                       lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Rows (item x sample) per sampler call.",
                                   lower_bound=1)
_MIN_PROMPT_BUCKET = flags.DEFINE_integer(
    "min_prompt_bucket", None, "Shortest padded prompt length (prompts pad to a power of two at or "
    f"above it); default {runner.MIN_PROMPT_BUCKET} for benchmarks, 64 for --records.", lower_bound=1)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N items of each benchmark.",
                              lower_bound=1)
_CHAT = flags.DEFINE_bool("chat", True, "Chat-template prompts (--nochat: base-model prompts).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_DTYPE = flags.DEFINE_string("dtype", None, "Weights dtype; default float32 on CPU, else bfloat16.")


def _benchmarks(data_dir: str, default: Sequence[str]) -> list[str]:
  """The requested names, checked: unknown names and missing files are all named at once."""
  names = list(dict.fromkeys(_BENCHMARKS.value or default))
  problems = []
  unknown = [n for n in names if n not in bm.BENCHMARKS]
  if unknown:
    problems.append(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(bm.BENCHMARKS)}")
  for name in names:
    if name in bm.BENCHMARKS:
      try:
        bm.data_file(name, data_dir)
      except FileNotFoundError as e:
        problems.append(f"missing file: {e}")
  if problems:
    raise app.UsageError("\n".join(problems))
  return names


def _tokenizer_spec(checkpoint: str) -> str:
  """--tokenizer, else the checkpoint folder's own, else the one saved with a training run."""
  if _TOKENIZER.value:
    return _TOKENIZER.value
  if folder := checkpoint_lib.tokenizer_folder(checkpoint):
    return folder
  log.warning("no tokenizer found with %s; using the tiny one (set --tokenizer)", checkpoint)
  return "tiny"


def _grade_file(path: str, data_dir: str) -> tuple[dict, dict]:
  names = _benchmarks(data_dir, ()) if _BENCHMARKS.value else None
  graded = runner.with_pass_at_k(predictions_lib.grade_predictions(path, data_dir, names))
  completions: dict[tuple[str, str], list[str]] = {}
  for p in predictions_lib.read_predictions(path):
    completions.setdefault((p.benchmark, p.id), []).append(p.completion)
  return graded, completions


def _load_model(checkpoint: str):
  dtype = _DTYPE.value or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  model = models.load_pretrained(checkpoint, dtype=dtype)
  tok_spec = _tokenizer_spec(checkpoint)
  tok = data.load_tokenizer(tok_spec)
  if len(tok) > model.cfg.vocab_size:
    raise app.UsageError(f"tokenizer {tok_spec} has {len(tok)} ids, the model only {model.cfg.vocab_size}")
  if _NUM_SAMPLES.value > 1 and _TEMPERATURE.value == 0:
    log.warning("--num_samples=%d at temperature 0: all samples are the same", _NUM_SAMPLES.value)
  return model, tok


def _generate(model, tok, items, chat: bool, min_prompt_bucket: int = runner.MIN_PROMPT_BUCKET,
              ) -> list[list[str]]:
  log.info("%s: %d items x %d samples", items[0].benchmark, len(items), _NUM_SAMPLES.value)
  return runner.generate_completions(
      model, tok, items, max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
      top_p=_TOP_P.value, top_k=_TOP_K.value, num_samples=_NUM_SAMPLES.value,
      batch_size=_BATCH_SIZE.value, chat=chat, seed=_SEED.value,
      min_prompt_bucket=_MIN_PROMPT_BUCKET.value or min_prompt_bucket)


def _generate_and_grade(checkpoint: str, data_dir: str) -> tuple[dict, dict]:
  names = _benchmarks(data_dir, GRLO_BENCHMARKS)
  judged = [n for n in names if bm.kind(n) == "preference"]
  if judged:
    raise app.UsageError(f"{', '.join(judged)}: judged by a reward model (grlo_jax.eval.win_rate), "
                         "not graded here")
  model, tok = _load_model(checkpoint)
  pairs = {}
  for name in names:
    items = bm.load(name, data_dir)[:_LIMIT.value]
    pairs[name] = list(zip(items, _generate(model, tok, items, _CHAT.value)))
  completions = {(name, item.id): outs for name, ps in pairs.items() for item, outs in ps}
  return runner.grade_completions(pairs, data_dir), completions


def _records_generate_and_grade(checkpoint: str) -> tuple[dict, dict]:
  """Each --records source as one math benchmark named by its spec (always chat prompts)."""
  if _BENCHMARKS.value:
    raise app.UsageError("give --records or --benchmarks, not both")
  if not _CHAT.value:
    raise app.UsageError("--records evaluates the records' chat prompts; --nochat does not apply")
  sources = {}
  for spec in _RECORDS.value:
    try:
      items = records_lib.records_to_items(data.read_records(spec), spec)[:_LIMIT.value]
    except (ValueError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    sources[spec] = items
  model, tok = _load_model(checkpoint)
  report, completions = {"benchmarks": {}, "items": []}, {}
  for spec, items in sources.items():
    outs = _generate(model, tok, items, chat=True, min_prompt_bucket=64)
    graded = records_lib.grade(items, outs)
    report["benchmarks"] |= graded["benchmarks"]
    report["items"] += graded["items"]
    completions |= {(spec, item.id): o for item, o in zip(items, outs)}
  return report, completions


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup(flags.FLAGS.verbosity)
  if bool(_CHECKPOINT.value) == bool(_PREDICTIONS.value):
    raise app.UsageError("give exactly one of --checkpoint and --predictions")
  data_dir = _DATA_DIR.value
  if _PREDICTIONS.value:
    graded, completions = _grade_file(_PREDICTIONS.value, data_dir)
    setup = f"predictions `{_PREDICTIONS.value}`"
  else:
    if _RECORDS.value:
      graded, completions = _records_generate_and_grade(_CHECKPOINT.value)
    else:
      graded, completions = _generate_and_grade(_CHECKPOINT.value, data_dir)
    setup = (f"checkpoint `{_CHECKPOINT.value}`, chat={_CHAT.value}, samples={_NUM_SAMPLES.value}, "
             f"temperature={_TEMPERATURE.value}, top_p={_TOP_P.value}, top_k={_TOP_K.value}, "
             f"max_new_tokens={_MAX_NEW_TOKENS.value}, limit={_LIMIT.value}, seed={_SEED.value}")
  out = pathlib.Path(_OUTPUT.value)
  result = {"benchmarks": graded["benchmarks"]}
  if _CHECKPOINT.value:  # which training step was evaluated (0: not a training checkpoint); plot.py reads it
    result["step"] = checkpoint_lib.checkpoint_step(_CHECKPOINT.value)
  report_lib.write(result, out)
  out.with_suffix(".md").write_text(f"{setup}\n\n{report_lib.markdown_table(result)}", encoding="utf-8")
  with open(out.with_suffix(".items.jsonl"), "w", encoding="utf-8") as f:
    for record in runner.item_records(graded, completions):
      f.write(json.dumps(record) + "\n")
  for name, summary in result["benchmarks"].items():
    log.info("%s: %s", name, json.dumps(summary))
  log.info("wrote %s, %s, %s", out, out.with_suffix(".md"), out.with_suffix(".items.jsonl"))


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
