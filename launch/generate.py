r"""Sample a completion from a model folder (HF or Orbax) or a tiny random model.

  python launch/generate.py --checkpoint=tiny --prompt="Hello" --max_new_tokens=16
  python launch/generate.py --checkpoint=/models/Qwen3-0.6B --prompt="2+2=" --chat --temperature=0
  python launch/generate.py --checkpoint=models/smollm2 --prompt="What is 12 + 34?" --chat --temperature=0

`--checkpoint` may also be a GGUF file (or a folder holding one). `--verbosity=1` shows the
libraries' INFO logs.
"""

import json
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from etils import epath

from grlo_jax import allocator, checkpoint, console, data, models
from grlo_jax.sampling import generate

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "tiny", "HF folder, Orbax model folder, training workdir (its newest checkpoint), or a "
    "preset name (random weights).")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "Tokenizer folder, or 'tiny'; default: the checkpoint's (its folder or its training "
    "run's), else 'tiny'.")
_PROMPT = flags.DEFINE_string("prompt", "Hello", "Prompt text.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "0 is greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Top-k (0 = off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_CHAT = flags.DEFINE_bool("chat", False, "Wrap the prompt in the chat template.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Weights dtype.")


def _load(spec: str) -> models.Transformer:
  if spec in models.PRESETS and not epath.Path(spec).exists():
    return models.init_model(models.preset(spec, param_dtype=_DTYPE.value, dtype=_DTYPE.value))
  return models.load_pretrained(spec, dtype=_DTYPE.value)


def main(argv: Sequence[str]) -> None:
  del argv
  console.setup(flags.FLAGS.verbosity)  # the completion only; library INFO at --verbosity=1
  model = _load(_CHECKPOINT.value)
  tok_spec = _TOKENIZER.value or checkpoint.tokenizer_folder(_CHECKPOINT.value) or "tiny"
  tok = data.load_tokenizer(tok_spec)
  if tok_spec == "tiny" and len(tok) > model.cfg.vocab_size:
    raise app.UsageError(f"the tiny tokenizer has {len(tok)} ids, the model only {model.cfg.vocab_size}")
  ids = data.special_ids(tok)
  text = (tok.apply_chat_template([{"role": "user", "content": _PROMPT.value}], tokenize=False,
                                  add_generation_prompt=True) if _CHAT.value else _PROMPT.value)
  prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
  ids_bp = jnp.asarray([prompt_ids], jnp.int32)
  t0 = time.perf_counter()
  out = generate(model, ids_bp, jnp.ones_like(ids_bp), max_new_tokens=_MAX_NEW_TOKENS.value,
                 temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                 eos_token_id=list(ids.eos_ids), pad_token_id=ids.pad_id, rng=jax.random.key(_SEED.value))
  tokens = np.asarray(out.tokens[0])[: int(out.lengths[0])]
  seconds = time.perf_counter() - t0
  completion = tok.decode(tokens, skip_special_tokens=True)
  if _JSON.value:
    print(json.dumps({"prompt": text, "completion": completion, "tokens": tokens.tolist(),
                      "num_tokens": len(tokens), "seconds_incl_compile": seconds}))
  else:
    print(text + completion)


if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  app.run(main)
