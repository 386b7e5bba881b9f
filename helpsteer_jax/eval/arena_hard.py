"""Arena-Hard v0.1: pairwise judgments against a baseline, and the Bradley-Terry score.

Judging. Each question is judged twice, once in each order, so a judge's position bias cancels:
game 1 shows the baseline as assistant A and the evaluated model as B, game 2 swaps them. The
judge writes its own answer first, compares, and ends with one of five verdicts `[[A>>B]]`,
`[[A>B]]`, `[[A=B]]`, `[[B>A]]`, `[[B>>A]]`. Judgments are stored in arena-hard-auto's v0.1
judgment layout, one JSON line per question:
    {"question_id", "model", "judge",
     "games": [{"user_prompt", "judgment", "score": "A>B" | ... | null}, {... game 2 ...}]}
so judgment files written by arena-hard-auto can be read and rescored here, and ours there.

Scoring (arena-hard's convention). Every game becomes a battle baseline-vs-model; a strong verdict
(`>>`) counts as three battles; a tie as half a win for each side; a game without a verdict is
left out. A Bradley-Terry model, `P(a beats b) = 1 / (1 + 10^((R_b - R_a) / 400))`, is fitted by
logistic regression on all battles; ratings are Elo-scaled (scale 400, base 10, initial 1000) and
shifted so the baseline is exactly 1000. The score is the predicted win rate against the
baseline, in percent; the 95% interval takes the 2.5 and 97.5 percentiles of the ratings over
bootstrap resamples of the battles (100 rounds, seeded) and maps them to win rates.

Style control (optional), as arena-hard-auto's `show_result.py --style-control` computes it:
1. per answer, four counts: its length in tokens, and, with the contents of its code blocks
   removed, its markdown headers, list items and bold spans (`style_counts`; answer files that
   carry arena-hard-auto's `conv_metadata` / `metadata` counts are read as they are);
2. per battle (baseline = a, model = b) and per count, `(a - b) / (a + b + 1)`;
3. each feature centred and divided by its standard deviation over all battles;
4. a Bradley-Terry fit with the four features added, L2-penalised as scikit-learn's default
   `LogisticRegression(C=1, fit_intercept=False)` that arena-hard-auto uses: every model,
   the baseline included, has a rating column (`+log 10` for a, `-log 10` for b) and every
   coefficient is penalised; arena-hard-auto fits each battle twice (a tie as one win and one
   loss), which the weights reproduce;
5. ratings anchored so the baseline is 1000 (arena-hard-auto anchors at 1114; only differences
   enter the win rate), the score read as the win rate against the baseline.
Centring matters when every battle pits one baseline against the models: the rating columns then
act as an intercept, so the model's rating is its strength at its own average style difference
from the baseline, the style coefficients take up only how the outcome varies with style around
it. A design in which a feature has no spread, or whose columns are linearly dependent, has no
well-defined style-controlled score: `DegenerateFitError` says so instead of returning a number.
Length is counted in tokens when the answer file carries `token_len` (arena-hard-auto's
tiktoken count); otherwise in word and punctuation pieces, which the result records
(`style_length_unit`): a ratio of counts is nearly insensitive to the choice.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from helpsteer_jax.eval.judges.base import ChatRequest
from helpsteer_jax.eval.logistic import fit_logistic

BASELINE = "gpt-4-0314"
LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
STRONG_WEIGHT = 3
ELO_SCALE, ELO_BASE, ELO_INIT = 400.0, 10.0, 1000.0
STYLE_FEATURES = ("length", "headers", "lists", "bold")
STYLE_C = 1.0  # scikit-learn's default inverse L2 strength, which arena-hard-auto's style fit uses

JUDGE_SYSTEM_PROMPT = """\
You are an impartial judge. Below is a user prompt followed by two answers to it, one from \
assistant A and one from assistant B. Decide which answer is better.

Before looking at the two answers closely, write your own answer to the prompt. Then compare each \
assistant's answer with yours, and point out and correct any mistakes or inaccurate statements \
they contain.

Judge whether each answer is helpful (it responds to what was asked and follows the instructions; \
when the prompt is ambiguous or open to several readings, asking the user for clarification is \
better than answering on an assumption), relevant (every part bears on the prompt) and concise \
(clear, without needless length or padding). Where the prompt calls for it, also weigh creativity \
and originality. Note any important information that an answer leaves out but that would help the \
user.

When you have given your reasoning, end with exactly one of these verdicts, written with double \
square brackets:
1. Assistant A is much better: [[A>>B]]
2. Assistant A is a little better: [[A>B]]
3. A tie, the answers are about equal: [[A=B]]
4. Assistant B is a little better: [[B>A]]
5. Assistant B is much better: [[B>>A]]

For example: "My final verdict is that the answers are tied: [[A=B]]"."""

PROMPT_TEMPLATE = (
  "<|User Prompt|>\n{question}\n\n"
  "<|The Start of Assistant A's Answer|>\n{answer_a}\n<|The End of Assistant A's Answer|>\n\n"
  "<|The Start of Assistant B's Answer|>\n{answer_b}\n<|The End of Assistant B's Answer|>"
)

_VERDICT = re.compile(r"\[\[\s*([AB])\s*(>>|<<|>|<|=)\s*([AB])\s*\]\]")
_FLIP = {">>": "<<", ">": "<", "=": "=", "<": ">", "<<": ">>"}


def parse_verdict(judgment: str) -> Optional[str]:
  """The verdict label of a judgment, or None when there is none or they disagree.

  Accepts spacing variants (`[[ A > B ]]`) and reversed forms (`[[B<A]]` = `[[A>B]]`). Several
  identical verdicts (a judge restating its conclusion) count once; different verdicts in one
  judgment are ambiguous and give None, as arena-hard does.
  """
  found = set()
  for left, op, right in _VERDICT.findall(judgment or ""):
    if left == right:
      continue
    if left == "B":  # B op A == A flip(op) B
      op = _FLIP[op]
    label = {">>": "A>>B", ">": "A>B", "=": "A=B", "<": "B>A", "<<": "B>>A"}[op]
    found.add(label)
  return found.pop() if len(found) == 1 else None


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
  return [
    {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
    {"role": "user", "content": PROMPT_TEMPLATE.format(question=question, answer_a=answer_a, answer_b=answer_b)},
  ]


@dataclasses.dataclass(frozen=True)
class PairItem:
  question_id: str
  question: str
  answer: str  # the evaluated model's
  baseline: str


def judge_with_chat(
  judge, items: Sequence[PairItem], model: str, temperature: float = 0.0, max_tokens: int = 4096
) -> list[dict[str, Any]]:
  """Two games per item (baseline as A, then the model as A) -> judgment records."""
  requests = []
  for item in items:
    requests.append(ChatRequest.of(judge_messages(item.question, item.baseline, item.answer), temperature, max_tokens))
    requests.append(ChatRequest.of(judge_messages(item.question, item.answer, item.baseline), temperature, max_tokens))
  replies = judge.chat(requests)
  records = []
  for k, item in enumerate(items):
    games = []
    for request, reply in zip(requests[2 * k : 2 * k + 2], replies[2 * k : 2 * k + 2]):
      games.append({"user_prompt": request.messages[1][1], "judgment": reply.text, "score": parse_verdict(reply.text)})
    records.append({"question_id": item.question_id, "model": model, "judge": judge.name, "games": games})
  return records


def verdict_from_scores(score_a: float, score_b: float, tie_margin: float, strong_margin: float) -> str:
  """A verdict label from two scalar scores: within `tie_margin` a tie, beyond `strong_margin` strong."""
  diff = score_a - score_b
  if abs(diff) <= tie_margin:
    return "A=B"
  if diff > 0:
    return "A>>B" if diff > strong_margin else "A>B"
  return "B>>A" if -diff > strong_margin else "B>A"


def judge_with_scores(
  judge, items: Sequence[PairItem], model: str, tie_margin: float = 0.1, strong_margin: float = 1.0
) -> list[dict[str, Any]]:
  """Judgment records from a score judge: both answers scored once, both games derived from the
  difference (a score judge has no position, so the two games mirror each other)."""
  convs = [[{"role": "user", "content": item.question}] for item in items]
  scores = judge.score(convs + convs, [i.answer for i in items] + [i.baseline for i in items])
  n = len(items)
  records = []
  for k, item in enumerate(items):
    s_model, s_base = scores[k], scores[n + k]
    games = []
    for a, b in ((s_base, s_model), (s_model, s_base)):
      games.append(
        {
          "user_prompt": item.question,
          "judgment": f"score judge {judge.name}: A {a:.4f}, B {b:.4f}",
          "score": verdict_from_scores(a, b, tie_margin, strong_margin),
        }
      )
    records.append({"question_id": item.question_id, "model": model, "judge": judge.name, "games": games})
  return records


def check_judgment(row: Mapping[str, Any], where: str) -> None:
  """Raises a ValueError naming `where` if `row` is not a v0.1 judgment record."""
  for key in ("question_id", "model", "games"):
    if key not in row:
      raise ValueError(f"{where}: judgment lacks {key!r}")
  games = row["games"]
  if not isinstance(games, list) or len(games) != 2:
    raise ValueError(f"{where}: 'games' must list 2 games (both answer orders)")
  for game in games:
    if not isinstance(game, dict) or "score" not in game:
      raise ValueError(f"{where}: each game needs a 'score'")
    if game["score"] is not None and game["score"] not in LABELS:
      raise ValueError(f"{where}: game score {game['score']!r} is not one of {LABELS} or null")


# -- battles and the Bradley-Terry fit ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Battles:
  """One row per battle (a strong verdict already repeated STRONG_WEIGHT times)."""

  question_id: np.ndarray  # [N] str
  model_a: np.ndarray  # [N] str
  model_b: np.ndarray  # [N] str
  winner: np.ndarray  # [N] str: "model_a", "model_b" or "tie"

  def __len__(self) -> int:
    return len(self.winner)


def battles_from_judgments(records: Sequence[Mapping[str, Any]], baseline: str = BASELINE) -> Battles:
  """Battles baseline (model_a) vs. model (model_b) from both games of every judgment."""
  rows: list[tuple[str, str, str, str]] = []
  for record in records:
    for g, game in enumerate(record["games"][:2]):
      label = game.get("score")
      if label not in LABELS:
        continue
      # Game 1 shows the baseline as A; game 2 shows the model as A.
      a_wins = label.startswith("A>")
      b_wins = label.startswith("B>")
      if label == "A=B":
        winner = "tie"
      elif (a_wins and g == 0) or (b_wins and g == 1):
        winner = "model_a"
      else:
        winner = "model_b"
      weight = STRONG_WEIGHT if ">>" in label else 1
      rows.extend([(str(record["question_id"]), baseline, str(record["model"]), winner)] * weight)
  cols = list(zip(*rows)) if rows else [(), (), (), ()]
  return Battles(*(np.asarray(c, dtype=object) for c in cols))


class DegenerateFitError(ValueError):
  """The style-controlled design has no unique optimum: a feature without spread, or linearly
  dependent columns. No score is reported, since any number would be an artefact of the solver."""


_CODE_BLOCK = re.compile(r"```([^`]*)```")
_HEADER = re.compile(r"^#{1,6}\s", re.M)  # one per line: h1 ... h6
_LIST_ITEM = re.compile(r"^\s*\d+\.\s|^\s*[-*+]\s", re.M)  # ordered or unordered
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def _without_code(text: str) -> str:
  # arena-hard-auto's rule, kept as it is so the counts agree: the text between each pair of
  # fences is deleted wherever it occurs in the answer (the fences themselves stay).
  for inner in _CODE_BLOCK.findall(text):
    if inner:
      text = text.replace(inner, "")
  return text


def style_counts(text: str) -> np.ndarray:
  """[4] length (word/punctuation pieces of the whole answer), markdown headers, list items and
  bold spans outside code blocks, counted with arena-hard-auto's patterns."""
  prose = _without_code(text)
  return np.array(
    [
      len(re.findall(r"\w+|[^\w\s]", text)),
      len(_HEADER.findall(prose)),
      len(_LIST_ITEM.findall(prose)),
      len(_BOLD.findall(prose)),
    ],
    dtype=np.float64,
  )


_METADATA_KEYS = ("token_len", "header_count", "list_count", "bold_count")


def style_counts_from_metadata(meta: Mapping[str, Any], where: str) -> np.ndarray:
  """[4] from arena-hard-auto's answer metadata: `token_len` and the markdown counts, each an int
  or a mapping of sub-counts (h1 ... h6; ordered, unordered; ** and __) that are summed."""
  out = []
  for key in _METADATA_KEYS:
    if key not in meta:
      raise ValueError(f"{where}: answer metadata lacks {key!r}")
    value = meta[key]
    out.append(sum(value.values()) if isinstance(value, Mapping) else value)
  return np.asarray(out, dtype=np.float64)


StyleSource = Any  # an answer text (str) or precomputed counts ([4] array)


def style_matrix(battles: Battles, answers: Mapping[str, Mapping[str, StyleSource]]) -> np.ndarray:
  """[N, 4] normalised style features of the battles (module docstring, steps 2 and 3).

  `answers[model][qid]` is every model's answer (the baseline's included) as text, or its [4]
  counts (`style_counts_from_metadata`). Raises `DegenerateFitError` naming a feature that does
  not vary over the battles.
  """
  cache: dict[tuple[str, str], np.ndarray] = {}

  def counts(model: str, qid: str) -> np.ndarray:
    if (model, qid) not in cache:
      try:
        source = answers[model][qid]
      except KeyError:
        raise ValueError(f"style control needs the answer of {model!r} to question {qid!r}") from None
      cache[(model, qid)] = style_counts(source) if isinstance(source, str) else np.asarray(source, dtype=np.float64)
    return cache[(model, qid)]

  if len(battles) == 0:
    raise ValueError("no battles: every judgment lacks a verdict")
  a = np.stack([counts(m, q) for m, q in zip(battles.model_a, battles.question_id)])  # [N, 4]
  b = np.stack([counts(m, q) for m, q in zip(battles.model_b, battles.question_id)])  # [N, 4]
  diff = (a - b) / (a + b + 1.0)
  spread = diff.std(axis=0)
  flat = [name for name, s in zip(STYLE_FEATURES, spread) if not s > 1e-12]
  if flat:
    raise DegenerateFitError(
      f"style control: the feature(s) {flat} take the same value in all {len(battles)} battles "
      "(e.g. no answer uses that markdown), so they cannot be normalised or fitted; the "
      "style-controlled score is undefined for these judgments"
    )
  return (diff - diff.mean(axis=0)) / spread


@dataclasses.dataclass(frozen=True)
class BradleyTerry:
  models: tuple[str, ...]
  elo: np.ndarray  # [M]
  style_coef: Optional[np.ndarray]  # [4] (log-odds per standard deviation), None without style


def fit_bradley_terry(
  battles: Battles,
  baseline: str = BASELINE,
  style: Optional[np.ndarray] = None,
  counts: Optional[np.ndarray] = None,
  models: Optional[Sequence[str]] = None,
  l2: float = 1e-6,
  check: bool = False,
) -> BradleyTerry:
  """Elo ratings (baseline at 1000) from battles; `counts` [N] reweights rows (the bootstrap).

  Without `style`: the unpenalised fit (a vanishing `l2` keeps separable data finite), the
  baseline's rating fixed at 0. With `style` [N, 4] (`style_matrix`): arena-hard-auto's
  L2-penalised fit (module docstring, step 4); `check` raises `DegenerateFitError` when that
  design is singular or the fit does not converge.
  """
  models = tuple(models or sorted(set(battles.model_a) | set(battles.model_b)))
  index = {m: i for i, m in enumerate(models)}
  n, p = len(battles), len(models)
  win_a = (battles.winner == "model_a").astype(np.float64) + 0.5 * (battles.winner == "tie")
  c = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64)
  rows_a = [index[m] for m in battles.model_a]
  rows_b = [index[m] for m in battles.model_b]
  if style is None:
    free = [i for i, m in enumerate(models) if m != baseline]  # the baseline's rating is fixed at 0
    x = np.zeros((n, p))
    x[np.arange(n), rows_a] += 1.0
    x[np.arange(n), rows_b] -= 1.0
    x = x[:, free]
    fit = fit_logistic(
      np.concatenate([x, x]),
      np.concatenate([np.ones(n), np.zeros(n)]),
      np.concatenate([c * win_a, c * (1.0 - win_a)]),
      l2=l2,
    )
    coef = np.zeros(p)
    coef[free] = fit.coef
    if baseline not in index:  # nothing to anchor: centre the ratings instead
      coef -= coef.mean()
    elo = ELO_INIT + ELO_SCALE / math.log(ELO_BASE) * coef
    return BradleyTerry(models, elo, None)
  x = np.zeros((n, p))  # [N, M + 4]: every model's rating column, then the style features
  x[np.arange(n), rows_a] += math.log(ELO_BASE)
  x[np.arange(n), rows_b] -= math.log(ELO_BASE)
  x = np.concatenate([x, style], axis=1)
  if check:
    _check_style_design(x, c, models, baseline)
  # Weight 2: arena-hard-auto fits each battle twice (its C applies to the doubled data).
  fit = fit_logistic(
    np.concatenate([x, x]),
    np.concatenate([np.ones(n), np.zeros(n)]),
    2.0 * np.concatenate([c * win_a, c * (1.0 - win_a)]),
    l2=1.0 / STYLE_C,
  )
  if check and not fit.converged:
    raise DegenerateFitError(f"style control: the fit did not converge in {fit.iterations} steps")
  rating = ELO_SCALE * fit.coef[:p]
  rating -= rating[index[baseline]] if baseline in index else rating.mean()
  return BradleyTerry(models, ELO_INIT + rating, fit.coef[p:])


def _check_style_design(x: np.ndarray, counts: np.ndarray, models: Sequence[str], baseline: str) -> None:
  """Raises `DegenerateFitError` when the unpenalised style design is rank deficient: the L2
  penalty would still give a number, but one set by the penalty, not by the judgments."""
  used = x[counts > 0]
  keep = [i for i, m in enumerate(models) if m != baseline] + list(range(len(models), x.shape[1]))
  design = used[:, keep] if baseline in models else used[:, 1:]
  rank = np.linalg.matrix_rank(design)
  if rank < design.shape[1]:
    raise DegenerateFitError(
      f"style control: the design of {len(used)} battles has rank {rank} < {design.shape[1]} "
      f"columns (models {list(models)} and features {list(STYLE_FEATURES)}): a feature is a "
      "linear combination of the others or of the model indicators, so the style-controlled "
      "score is not identified"
    )


def win_rate(elo: np.ndarray | float, elo_baseline: float = ELO_INIT) -> np.ndarray:
  """Predicted probability of beating the baseline."""
  return 1.0 / (1.0 + ELO_BASE ** ((elo_baseline - np.asarray(elo, dtype=np.float64)) / ELO_SCALE))


def score_battles(
  battles: Battles,
  baseline: str = BASELINE,
  rounds: int = 100,
  seed: int = 42,
  style: Optional[np.ndarray] = None,
  show_progress: bool = False,
) -> dict[str, dict[str, Any]]:
  """Per model: score (win rate vs. baseline, %), its 95% bootstrap interval, Elo and its interval."""
  if len(battles) == 0:
    raise ValueError("no battles: every judgment lacks a verdict")
  full = fit_bradley_terry(battles, baseline, style, check=style is not None)
  rng = np.random.default_rng(seed)
  n = len(battles)
  boot = np.zeros((rounds, len(full.models)))
  for r in tqdm(range(rounds), desc="bootstrap", disable=not show_progress):
    counts = np.bincount(rng.integers(0, n, n), minlength=n)
    boot[r] = fit_bradley_terry(battles, baseline, style, counts, full.models).elo
  out: dict[str, dict[str, Any]] = {}
  for i, model in enumerate(full.models):
    if model == baseline:
      continue
    lo, hi = np.percentile(boot[:, i], [2.5, 97.5]) if rounds else (full.elo[i], full.elo[i])
    mine = battles.model_b == model
    out[model] = {
      "score": float(100 * win_rate(full.elo[i])),
      "ci_low": float(100 * win_rate(lo)),
      "ci_high": float(100 * win_rate(hi)),
      "elo": float(full.elo[i]),
      "elo_ci_low": float(lo),
      "elo_ci_high": float(hi),
      "num_battles": int(mine.sum()),
      "wins": int((mine & (battles.winner == "model_b")).sum()),
      "losses": int((mine & (battles.winner == "model_a")).sum()),
      "ties": int((mine & (battles.winner == "tie")).sum()),
      "bootstrap_rounds": rounds,
      "style_control": style is not None,
    }
    if full.style_coef is not None:
      out[model]["style_coef"] = dict(zip(STYLE_FEATURES, map(float, full.style_coef)))
  return out


def score_judgments(
  records: Sequence[Mapping[str, Any]],
  baseline: str = BASELINE,
  rounds: int = 100,
  seed: int = 42,
  style_control: bool = False,
  answers: Optional[Mapping[str, Mapping[str, StyleSource]]] = None,
) -> dict[str, dict[str, Any]]:
  """`score_battles` over judgment records; `answers[model][qid]` (baseline included: a text or
  [4] counts, see `style_matrix`) is needed only for style control."""
  for i, row in enumerate(records):
    check_judgment(row, f"judgment {i}")
  battles = battles_from_judgments(records, baseline)
  style = None
  if style_control:
    if answers is None:
      raise ValueError("style control needs the answers of every model and of the baseline")
    style = style_matrix(battles, answers)
  scores = score_battles(battles, baseline, rounds, seed, style)
  unit = None
  if style is not None and answers is not None:  # style is only built from answers
    used = {m for m in set(battles.model_a) | set(battles.model_b)}
    kinds = {isinstance(v, str) for m in used for v in answers[m].values()}
    unit = {frozenset({True}): "word pieces", frozenset({False}): "tokens (answer metadata)"}.get(
      frozenset(kinds), "mixed: tokens (answer metadata) and word pieces"
    )
  for model, entry in scores.items():
    if unit is not None:
      entry["style_length_unit"] = unit
    mine = [r for r in records if r["model"] == model]
    entry["num_questions"] = len(mine)
    entry["failed_games"] = sum(1 for r in mine for g in r["games"] if g.get("score") not in LABELS)
  return scores
