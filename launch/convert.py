r"""Convert models between Hugging Face, Orbax and GGUF formats.

  python launch/convert.py hf-to-orbax --src=HF_DIR --dst=ORBAX_DIR
  python launch/convert.py orbax-to-hf --src=ORBAX_DIR --dst=HF_DIR
  python launch/convert.py gguf-to-hf --src=FILE.gguf --dst=HF_DIR
  python launch/convert.py gguf-to-orbax --src=FILE.gguf --dst=ORBAX_DIR

`--src` of orbax-to-hf may also be a training checkpoint written by launch/train.py (the policy
is exported). gguf-to-* dequantise the weights (to `--dtype`) and write the tokenizer and chat
template from the file's metadata beside them (HF's tokenizer files), so the folder is a complete
model for transformers, for `load_pretrained` and for launch/evaluate.py.
"""

from collections.abc import Sequence

from absl import app, flags

from grlo_jax import data, models
from grlo_jax.models import gguf

_SRC = flags.DEFINE_string("src", None, "Source folder (local or gs://), or a .gguf file.", required=True)
_DST = flags.DEFINE_string("dst", None, "Destination folder (local or gs://).", required=True)
_DTYPE = flags.DEFINE_string("dtype", "float32", "Storage dtype of the converted weights.")

COMMANDS = ("hf-to-orbax", "orbax-to-hf", "gguf-to-hf", "gguf-to-orbax")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: convert.py {{{'|'.join(COMMANDS)}}} --src=PATH --dst=PATH")
  command = argv[1]
  if command.startswith("gguf-") and gguf.find_gguf(_SRC.value) is None:
    raise app.UsageError(f"{command}: --src={_SRC.value} is not a .gguf file (or a folder holding one)")
  model = models.load_pretrained(_SRC.value, dtype=_DTYPE.value)
  if command.endswith("-to-orbax"):
    models.save_orbax(model, _DST.value)
  else:
    models.export_hf(model, _DST.value)
  if command.startswith("gguf-"):
    data.load_tokenizer(_SRC.value).save_pretrained(_DST.value)
  print(f"{command}: {_SRC.value} -> {_DST.value}")


if __name__ == "__main__":
  app.run(main)
