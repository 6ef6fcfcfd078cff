r"""Convert model folders between Hugging Face and Orbax formats.

  python launch/convert.py hf-to-orbax --src=HF_DIR --dst=ORBAX_DIR
  python launch/convert.py orbax-to-hf --src=ORBAX_DIR --dst=HF_DIR

`--src` of orbax-to-hf may also be a training checkpoint written by launch/train.py (the policy
is exported).
"""

from collections.abc import Sequence

from absl import app, flags

from grlo_jax import models

_SRC = flags.DEFINE_string("src", None, "Source folder (local or gs://).", required=True)
_DST = flags.DEFINE_string("dst", None, "Destination folder (local or gs://).", required=True)
_DTYPE = flags.DEFINE_string("dtype", "float32", "Storage dtype of the converted weights.")

COMMANDS = ("hf-to-orbax", "orbax-to-hf")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: convert.py {{{'|'.join(COMMANDS)}}} --src=PATH --dst=PATH")
  model = models.load_pretrained(_SRC.value, dtype=_DTYPE.value)
  if argv[1] == "hf-to-orbax":
    models.save_orbax(model, _DST.value)
  else:
    models.export_hf(model, _DST.value)
  print(f"{argv[1]}: {_SRC.value} -> {_DST.value}")


if __name__ == "__main__":
  app.run(main)
