"""Prompt data: records, tokenizers and chat template, and the grain batch pipeline.

  tok = load_tokenizer(tokenizer_folder_or_tiny, cache_dir=workdir / "tokenizer")
  ids = special_ids(tok)                      # pad, eos, "<|im_end|>\n" for the RL step
  prompts = encode_prompts(read_records(train_files), tok, max_prompt_length=1024)
  it = make_prompt_iterator(prompts, batch_size=1024, seed=seed, num_epochs=15)
  total_steps = steps_per_epoch(prompts, 1024) * 15
  batch = next(it)                            # numpy; DEVICE_KEYS go to jit, HOST_KEYS stay
"""

from grlo_jax.data.pipeline import DEVICE_KEYS
from grlo_jax.data.pipeline import HOST_KEYS
from grlo_jax.data.pipeline import STYLE_IDS
from grlo_jax.data.pipeline import bucket_width
from grlo_jax.data.pipeline import collate
from grlo_jax.data.pipeline import make_prompt_dataset
from grlo_jax.data.pipeline import make_prompt_iterator
from grlo_jax.data.pipeline import steps_per_epoch
from grlo_jax.data.prompts import EncodedPrompt
from grlo_jax.data.prompts import PromptSet
from grlo_jax.data.prompts import encode_prompts
from grlo_jax.data.prompts import format_prompts
from grlo_jax.data.records import PromptRecord
from grlo_jax.data.records import RecordError
from grlo_jax.data.records import read_jsonl
from grlo_jax.data.records import read_parquet
from grlo_jax.data.records import read_records
from grlo_jax.data.records import read_tfds
from grlo_jax.data.tokenizer import TINY_PROMPTS
from grlo_jax.data.tokenizer import SpecialIds
from grlo_jax.data.tokenizer import build_tiny_tokenizer
from grlo_jax.data.tokenizer import load_tokenizer
from grlo_jax.data.tokenizer import special_ids
