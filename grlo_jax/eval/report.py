"""Evaluation reports: the JSON file `launch/evaluate.py` writes, and a Markdown table of it."""

import json
import pathlib

# Columns in table order; a benchmark shows the ones it has.
_COLUMNS = ("accuracy", "pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "win_rate",
            "bt_win_rate", "n", "samples", "missing")


def markdown_table(report: dict) -> str:
  """One row per benchmark of `report["benchmarks"]`; rates as percentages."""
  rows = report["benchmarks"]
  columns = [c for c in _COLUMNS if any(c in s for s in rows.values())]
  lines = ["| benchmark | " + " | ".join(columns) + " |",
           "| --- |" + " ---: |" * len(columns)]
  for name, summary in rows.items():
    cells = []
    for c in columns:
      value = summary.get(c)  # benchmarks differ in which columns they fill
      if value is None:
        cells.append("")
      elif isinstance(value, float):
        cells.append(f"{100 * value:.1f}")
      else:
        cells.append(str(value))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  notes = sorted({s["proxy"] for s in rows.values() if "proxy" in s})
  return "\n".join(lines + [f"\n{n}" for n in notes]) + "\n"


def write(report: dict, json_path: str | pathlib.Path,
          markdown_path: str | pathlib.Path | None = None) -> None:
  """Writes `report` as indented JSON, and the Markdown table when `markdown_path` is given."""
  json_path = pathlib.Path(json_path)
  json_path.parent.mkdir(parents=True, exist_ok=True)
  json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
  if markdown_path is not None:
    pathlib.Path(markdown_path).write_text(markdown_table(report), encoding="utf-8")
