"""Benchmark loaders: local JSONL files in their published formats -> `Item`s with prompts.

Every item carries two prompt forms: `prompt`, plain text for a base model, and `messages`,
a one-turn chat for a chat template. docs/evaluation.md lists the formats; the files and
their provenance are in shared/data/eval/SOURCES.md.
"""

import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping

from grlo_jax.rewards.verifiers import choice

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# simple-evals' QUERY_TEMPLATE_MULTICHOICE.
GPQA_TEMPLATE = (
    "Answer the following multiple choice question. The last line of your response should be of "
    "the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think "
    "step by step before answering.\n\n{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}")
HUMANEVAL_CHAT = ("Complete the following Python function. Reply with the whole function in one "
                  "```python code block.\n\n```python\n{prompt}```")
MBPP_FEW_SHOT_IDS = (2, 3, 4)  # the prompt examples of Austin et al. (2021)
MBPP_TEST_IDS = range(11, 511)
GPQA_SHUFFLE_SEED = 0

Message = dict[str, str]


@dataclasses.dataclass(frozen=True, repr=False)
class Item:
  """One benchmark question.

  answer: the gold final answer (math), the correct letter after shuffling (GPQA), or the
    reference output (AlpacaEval); empty for code.
  tests: what the code graders run: HumanEval {prompt, test, entry_point}; MBPP
    {test_list, test_setup_code}.
  """
  benchmark: str
  id: str
  prompt: str
  messages: tuple[Message, ...]
  answer: str = ""
  tests: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __repr__(self) -> str:  # ids only: GPQA text must stay out of logs and test output
    return f"Item({self.benchmark}/{self.id})"


def _user(content: str) -> tuple[Message, ...]:
  return ({"role": "user", "content": content},)


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_no}: not JSON ({e.msg})") from None
  return rows


def _integer_text(answer: Any) -> str:
  # AIME / AMC golds: "025", 27.0 and 70 are all plain integers.
  value = float(answer)
  return str(int(value)) if value.is_integer() else str(answer)


def _math_item(benchmark: str, id_: Any, problem: str, answer: str) -> Item:
  user = f"{problem}\n{MATH_INSTRUCTION}"
  return Item(benchmark, str(id_), f"Problem:\n{problem}\n\n{MATH_INSTRUCTION}\n\nSolution:\n",
              _user(user), answer)


def _math500(rows):
  return [_math_item("math500", r["unique_id"], r["problem"], r["answer"]) for r in rows]


def _minerva(rows):
  return [_math_item("minerva_math", r["idx"], r["problem"], r["answer"]) for r in rows]


def _olympiad(rows):
  items = []
  for r in rows:
    problem = r["question"] if not r["context"] else f"{r['context']}\n\n{r['question']}"
    if r["is_multiple_answer"]:
      problem += "\nThere may be more than one answer: give all of them, separated by commas."
    if r["unit"]:
      problem += f"\nThe unit of the answer is {r['unit']}; leave it out of the final answer."
    items.append(_math_item("olympiadbench", r["id"], problem, r["answer"]))
  return items


def _aime24(rows):
  return [_math_item("aime24", r["id"], r["problem"], _integer_text(r["answer"])) for r in rows]


def _aime25(rows):
  return [_math_item("aime25", r["id"], r["problem"], _integer_text(r["answer"])) for r in rows]


def _amc23(rows):
  return [_math_item("amc23", r["id"], r["problem"], _integer_text(r["answer"])) for r in rows]


def _gsm8k(rows):
  items = []
  for i, r in enumerate(rows):
    gold = r["answer"].split("####")[-1].strip().replace(",", "")
    items.append(_math_item("gsm8k", r.get("id", i), r["question"], gold))
  return items


def _gpqa(rows):
  items = []
  for r in rows:
    shuffled = choice.shuffle_options(
        r["Correct Answer"].strip(),
        [r[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)],
        key=r["Record ID"], seed=GPQA_SHUFFLE_SEED)
    user = GPQA_TEMPLATE.format(question=r["Question"].strip(),
                                **dict(zip(choice.LETTERS, shuffled.options)))
    items.append(Item("gpqa_diamond", r["Record ID"], f"{user}\n\nSolution:\n", _user(user),
                      shuffled.correct_letter))
  return items


def _humaneval(rows):
  return [Item("humaneval", r["task_id"], r["prompt"],
               _user(HUMANEVAL_CHAT.format(prompt=r["prompt"])),
               tests={"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"],
                      "canonical_solution": r["canonical_solution"]})
          for r in rows]


def _mbpp_task(r: Mapping[str, Any]) -> str:
  tests = "\n".join(r["test_list"])
  return (f"You are an expert Python programmer, and here is your task: {r['text']} "
          f"Your code should pass these tests:\n\n{tests}\n")


def _mbpp_shot(r: Mapping[str, Any]) -> str:
  code = r["code"].replace("\r\n", "\n")  # the published code has CRLF line ends
  return f"{_mbpp_task(r)}[BEGIN]\n{code}\n[DONE]\n"


def _mbpp(rows):
  by_id = {r["task_id"]: r for r in rows}
  shots = "".join(_mbpp_shot(by_id[i]) for i in MBPP_FEW_SHOT_IDS)
  items = []
  for i in MBPP_TEST_IDS:
    r = by_id[i]
    chat = (f"{r['text']}\nYour code should pass these tests:\n\n" + "\n".join(r["test_list"])
            + "\n\nReply with the Python code in one ```python code block.")
    items.append(Item("mbpp", str(i), f"{shots}{_mbpp_task(r)}[BEGIN]\n", _user(chat),
                      tests={"test_list": tuple(r["test_list"]),
                             "test_setup_code": r["test_setup_code"], "code": r["code"]}))
  return items


def _alpaca(rows):
  return [Item("alpaca_eval", str(i), f"{r['instruction']}\n\nResponse:\n", _user(r["instruction"]),
               r["output"], {"dataset": r["dataset"], "reference_generator": r["generator"]})
          for i, r in enumerate(rows)]


# benchmark -> (file name, builder, kind). kind picks the grader.
_REGISTRY: dict[str, tuple[str, Callable[[list[dict]], list[Item]], str]] = {
    "math500": ("math500.jsonl", _math500, "math"),
    "minerva_math": ("minerva_math.jsonl", _minerva, "math"),
    "olympiadbench": ("olympiadbench.jsonl", _olympiad, "math"),
    "aime24": ("aime24.jsonl", _aime24, "math"),
    "aime25": ("aime25.jsonl", _aime25, "math"),
    "amc23": ("amc23.jsonl", _amc23, "math"),
    "gsm8k": ("gsm8k.jsonl", _gsm8k, "math"),
    "gpqa_diamond": ("gpqa_diamond.jsonl", _gpqa, "choice"),
    "humaneval": ("humaneval.jsonl", _humaneval, "humaneval"),
    "mbpp": ("mbpp.jsonl", _mbpp, "mbpp"),
    "alpaca_eval": ("alpaca_eval.jsonl", _alpaca, "preference"),
}
BENCHMARKS = tuple(_REGISTRY)


def kind(benchmark: str) -> str:
  """The grader family: math, choice, humaneval, mbpp or preference."""
  return _REGISTRY[_check(benchmark)][2]


def _check(benchmark: str) -> str:
  if benchmark not in _REGISTRY:
    raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
  return benchmark


def data_file(benchmark: str, data_dir: str | pathlib.Path) -> pathlib.Path:
  """`data_dir/<file>`, or `data_dir/eval/<file>` when `data_dir` is the shared data root."""
  name = _REGISTRY[_check(benchmark)][0]
  data_dir = pathlib.Path(data_dir)
  for path in (data_dir / name, data_dir / "eval" / name):
    if path.is_file():
      return path
  raise FileNotFoundError(f"{benchmark}: no {name} in {data_dir} or {data_dir / 'eval'}")


def load(benchmark: str, data_dir: str | pathlib.Path) -> list[Item]:
  """All items of `benchmark` (MBPP: the test split, task_id 11-510) in file order."""
  path = data_file(benchmark, data_dir)
  builder = _REGISTRY[benchmark][1]
  try:
    return builder(_read_jsonl(path))
  except KeyError as e:
    raise ValueError(f"{path}: a record lacks field {e.args[0]!r}") from None

