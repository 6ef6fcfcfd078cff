r"""Preference pairs from a model's own samples, ranked by the math verifier, to a JSONL file.

  python launch/make_pairs.py --model=models/smollm2 --records=arithmetic-pairs:train:200 \
      --output=pairs/train.jsonl [--num_samples=6 --temperature=0.7 --max_new_tokens=48]

`--records` takes `arithmetic-pairs:SPLIT[:N[:SEED]]` (the problems of `arithmetic:SPLIT[:N[:SEED]]`,
grlo_jax/data/arithmetic.py; the same train/test split) or any prompt records with a ground truth
(`arithmetic:...`, GRLO .jsonl / .parquet). Each prompt is sampled `--num_samples` times, each
sample graded by the math verifier, and each prompt with a correct and a wrong sample gives up to
`--max_pairs_per_prompt` pairs, correct over wrong, the wrong kinds mixed (grlo_jax/rm/pairs.py);
`--edited_pairs_per_prompt=K` adds up to K minimal pairs a prompt (a sample against itself with
its final answer corrected or perturbed), also from prompts with no correct sample.
Writes OUTPUT (`{"prompt", "chosen", "rejected", "extra_info"}` a line) and OUTPUT.stats.json
(counts by kind, time). The records go in as they are, so the reward model learns from the
policy's own distribution. `--samples_output=S.jsonl` keeps the samples; `--samples_input=S.jsonl`
mines them again (another `--max_pairs_per_prompt`, edits, verifier) without sampling:

  python launch/make_pairs.py --samples_input=pairs/train.samples.jsonl --output=pairs/train_e1.jsonl \
      --max_pairs_per_prompt=4 --edited_pairs_per_prompt=1
"""

import json
import logging
import pathlib
import time
from collections.abc import Sequence

import jax
from absl import app, flags

from grlo_jax import allocator, console, data, models
from grlo_jax import checkpoint as checkpoint_lib
from grlo_jax.data import arithmetic
from grlo_jax.eval import records as records_lib
from grlo_jax.eval import runner
from grlo_jax.rm import pairs as pairs_lib

log = logging.getLogger("grlo_jax.make_pairs")

_MODEL = flags.DEFINE_string("model", None, "Model to sample from (HF / GGUF / Orbax folder, training workdir).")
_RECORDS = flags.DEFINE_string("records", None, "arithmetic-pairs:SPLIT[:N[:SEED]], or prompt records "
                               "with reward_model.ground_truth.")
_OUTPUT = flags.DEFINE_string("output", None, "JSONL of pairs to write.", required=True)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 6, "Samples per prompt.", lower_bound=2)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Sampling temperature.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 48, "Tokens per sample at most.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 48, "Rows (prompt x sample) per sampler call.", lower_bound=1)
_MAX_PAIRS = flags.DEFINE_integer("max_pairs_per_prompt", 2, "Pairs a prompt gives at most.", lower_bound=1)
_EDITED = flags.DEFINE_integer("edited_pairs_per_prompt", 0, "Minimal pairs a prompt adds at most: a sample "
                               "against itself with only its answer corrected or perturbed (grlo_jax/rm/pairs.py).",
                               lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and the edits').")
_SAMPLES_OUTPUT = flags.DEFINE_string("samples_output", None, "Also write every prompt's samples here (JSONL), "
                                      "to mine again with --samples_input.")
_SAMPLES_INPUT = flags.DEFINE_string("samples_input", None, "Mine the samples of a --samples_output file "
                                     "instead of sampling (no --model, --records).")


def _sample() -> tuple[list[str], list[list[str]], list[list[bool]], list[str], list[str], float]:
  """(user prompts, samples, truncated flags, truths, ids, seconds) of `--records` from `--model`."""
  if not (_MODEL.value and _RECORDS.value):
    raise app.UsageError("--model and --records are required (or --samples_input to mine saved samples)")
  spec = _RECORDS.value
  if arithmetic.is_pairs_spec(spec):
    spec = arithmetic.PREFIX + spec[len(arithmetic.PAIRS_PREFIX):]
  try:
    records = data.read_records(spec)
    items = records_lib.records_to_items(records, spec)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from None
  if any(len([m for m in it.messages if m["role"] != "system"]) != 1 for it in items):
    raise app.UsageError(f"{_RECORDS.value}: pairs are written with a single-user-turn prompt string")
  t0 = time.perf_counter()
  model = models.load_pretrained(_MODEL.value, dtype="float32" if jax.default_backend() == "cpu" else "bfloat16")
  tok = data.load_tokenizer(checkpoint_lib.tokenizer_folder(_MODEL.value) or _MODEL.value)
  texts = runner.generate_completions(
      model, tok, items, max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
      num_samples=_NUM_SAMPLES.value, batch_size=_BATCH_SIZE.value, chat=True, seed=_SEED.value,
      min_prompt_bucket=64)
  seconds = time.perf_counter() - t0
  # A completion as long as the limit was cut there (its stop token, if any, is not in the text).
  truncated = [[len(tok(t, add_special_tokens=False)["input_ids"]) >= _MAX_NEW_TOKENS.value for t in ts]
               for ts in texts]
  user_text = [next(m["content"] for m in it.messages if m["role"] == "user") for it in items]
  return user_text, texts, truncated, [it.answer for it in items], [it.id for it in items], seconds


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup(flags.FLAGS.verbosity)
  from grlo_jax.rewards.verifiers import math as math_verifier  # lazy: math-verify is heavy
  if _SAMPLES_INPUT.value:
    try:
      user_text, texts, truncated, truths, ids = pairs_lib.read_samples(_SAMPLES_INPUT.value)
    except (ValueError, FileNotFoundError) as e:
      raise app.UsageError(str(e)) from None
    source = {"samples_input": _SAMPLES_INPUT.value}
  else:
    user_text, texts, truncated, truths, ids, sample_s = _sample()
    if _SAMPLES_OUTPUT.value:
      pairs_lib.write_samples(_SAMPLES_OUTPUT.value, user_text, texts, truncated, truths, ids)
      log.info("wrote the %d prompts' samples to %s", len(ids), _SAMPLES_OUTPUT.value)
    source = {"records": _RECORDS.value, "model": _MODEL.value, "num_samples": _NUM_SAMPLES.value,
              "temperature": _TEMPERATURE.value, "max_new_tokens": _MAX_NEW_TOKENS.value,
              "sample_seconds": round(sample_s, 1)}
  graded = pairs_lib.grade_samples(texts, truncated, truths, math_verifier.extract_answer,
                                   math_verifier.answers_match)
  pairs, counts = pairs_lib.mine_pairs(user_text, graded, ids, max_pairs_per_prompt=_MAX_PAIRS.value)
  if _EDITED.value:
    edited, edit_counts = pairs_lib.edit_pairs(
        user_text, graded, ids, truths, math_verifier.extract_answer, math_verifier.answers_match,
        per_prompt=_EDITED.value, seed=_SEED.value)
    pairs += edited
    counts = counts | edit_counts | {"pairs": len(pairs)}
  out = pathlib.Path(_OUTPUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    for p in pairs:
      f.write(json.dumps(p) + "\n")
  stats = {**source, "prompts": len(ids), "max_pairs_per_prompt": _MAX_PAIRS.value,
           "edited_pairs_per_prompt": _EDITED.value, "seed": _SEED.value, **counts}
  out.with_name(out.name + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
  log.info("%s", json.dumps(stats))
  log.info("wrote %d pairs to %s", len(pairs), out)


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
