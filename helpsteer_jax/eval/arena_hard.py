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

Style control (optional) adds, as in arena-hard's style-controlled leaderboard, four features per
battle: the normalised differences `(a - b) / (a + b + 1)` of answer length and of the numbers of
markdown headers, list items and bold spans (code blocks removed first), each scaled to unit
spread. The model ratings are then read at equal style, so a model cannot gain by being longer or
more heavily formatted. (Unlike arena-hard, the features are not centred: see `style_matrix`.)
Length is counted in word and punctuation pieces, not in a particular tokenizer's tokens; a ratio
of counts is nearly insensitive to the choice.
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
  return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT},
          {"role": "user", "content": PROMPT_TEMPLATE.format(question=question, answer_a=answer_a,
                                                             answer_b=answer_b)}]


@dataclasses.dataclass(frozen=True)
class PairItem:
  question_id: str
  question: str
  answer: str  # the evaluated model's
  baseline: str


def judge_with_chat(judge, items: Sequence[PairItem], model: str, temperature: float = 0.0,
                    max_tokens: int = 4096) -> list[dict[str, Any]]:
  """Two games per item (baseline as A, then the model as A) -> judgment records."""
  requests = []
  for item in items:
    requests.append(ChatRequest.of(judge_messages(item.question, item.baseline, item.answer),
                                   temperature, max_tokens))
    requests.append(ChatRequest.of(judge_messages(item.question, item.answer, item.baseline),
                                   temperature, max_tokens))
  replies = judge.chat(requests)
  records = []
  for k, item in enumerate(items):
    games = []
    for request, reply in zip(requests[2 * k:2 * k + 2], replies[2 * k:2 * k + 2]):
      games.append({"user_prompt": request.messages[1][1], "judgment": reply.text,
                    "score": parse_verdict(reply.text)})
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


def judge_with_scores(judge, items: Sequence[PairItem], model: str, tie_margin: float = 0.1,
                      strong_margin: float = 1.0) -> list[dict[str, Any]]:
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
      games.append({"user_prompt": item.question,
                    "judgment": f"score judge {judge.name}: A {a:.4f}, B {b:.4f}",
                    "score": verdict_from_scores(a, b, tie_margin, strong_margin)})
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


def _strip_code(text: str) -> str:
  return re.sub(r"```.*?```", "", text, flags=re.S)


def style_counts(text: str) -> np.ndarray:
  """[4] length (word/punctuation pieces), markdown headers, list items, bold spans."""
  prose = _strip_code(text)
  return np.array([
      len(re.findall(r"\w+|[^\w\s]", text)),
      len(re.findall(r"^#{1,6} ", prose, flags=re.M)),
      len(re.findall(r"^\s*(?:[-*+]|\d+\.) ", prose, flags=re.M)),
      len(re.findall(r"\*\*[^*\n]+\*\*|__[^_\n]+__", prose)),
  ], dtype=np.float64)


def style_matrix(battles: Battles, answers: Mapping[str, Mapping[str, str]]) -> np.ndarray:
  """[N, 4] style differences `(a - b) / (a + b + 1)`, scaled to unit root-mean-square;
  `answers[model][qid]` holds every model's answers (the baseline's included)."""
  cache: dict[tuple[str, str], np.ndarray] = {}

  def counts(model: str, qid: str) -> np.ndarray:
    if (model, qid) not in cache:
      try:
        cache[(model, qid)] = style_counts(answers[model][qid])
      except KeyError:
        raise ValueError(f"style control needs the answer of {model!r} to question {qid!r}") from None
    return cache[(model, qid)]

  a = np.stack([counts(m, q) for m, q in zip(battles.model_a, battles.question_id)])
  b = np.stack([counts(m, q) for m, q in zip(battles.model_b, battles.question_id)])
  diff = (a - b) / (a + b + 1.0)
  # Scaled to unit spread but not centred: zero must keep meaning "equal style", so that the
  # model ratings are read at equal style. (arena-hard also subtracts the mean; with every battle
  # pitting one baseline against the models, that mean is the models' average style advantage,
  # and centring on it would leave that advantage inside the ratings.)
  scale = np.sqrt((diff * diff).mean(axis=0))
  return diff / np.where(scale > 0, scale, 1.0)


@dataclasses.dataclass(frozen=True)
class BradleyTerry:
  models: tuple[str, ...]
  elo: np.ndarray  # [M]
  style_coef: Optional[np.ndarray]  # [4] (log-odds per standard deviation), None without style


def fit_bradley_terry(battles: Battles, baseline: str = BASELINE, style: Optional[np.ndarray] = None,
                      counts: Optional[np.ndarray] = None, models: Optional[Sequence[str]] = None,
                      l2: float = 1e-6) -> BradleyTerry:
  """Elo ratings (baseline at 1000) from battles; `counts` [N] reweights rows (the bootstrap)."""
  models = tuple(models or sorted(set(battles.model_a) | set(battles.model_b)))
  index = {m: i for i, m in enumerate(models)}
  n, p = len(battles), len(models)
  free = [i for i, m in enumerate(models) if m != baseline]  # the baseline's rating is fixed at 0
  x = np.zeros((n, p))
  x[np.arange(n), [index[m] for m in battles.model_a]] += 1.0
  x[np.arange(n), [index[m] for m in battles.model_b]] -= 1.0
  x = x[:, free]
  if style is not None:
    x = np.concatenate([x, style], axis=1)
  win_a = (battles.winner == "model_a").astype(np.float64) + 0.5 * (battles.winner == "tie")
  c = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64)
  fit = fit_logistic(np.concatenate([x, x]), np.concatenate([np.ones(n), np.zeros(n)]),
                     np.concatenate([c * win_a, c * (1.0 - win_a)]), l2=l2)
  coef = np.zeros(p)
  coef[free] = fit.coef[:len(free)]
  if baseline not in index:  # nothing to anchor: centre the ratings instead
    coef -= coef.mean()
  elo = ELO_INIT + ELO_SCALE / math.log(ELO_BASE) * coef
  return BradleyTerry(models, elo, None if style is None else fit.coef[len(free):])


def win_rate(elo: np.ndarray | float, elo_baseline: float = ELO_INIT) -> np.ndarray:
  """Predicted probability of beating the baseline."""
  return 1.0 / (1.0 + ELO_BASE ** ((elo_baseline - np.asarray(elo, dtype=np.float64)) / ELO_SCALE))


def score_battles(battles: Battles, baseline: str = BASELINE, rounds: int = 100, seed: int = 42,
                  style: Optional[np.ndarray] = None, show_progress: bool = False) -> dict[str, dict[str, Any]]:
  """Per model: score (win rate vs. baseline, %), its 95% bootstrap interval, Elo and its interval."""
  if len(battles) == 0:
    raise ValueError("no battles: every judgment lacks a verdict")
  full = fit_bradley_terry(battles, baseline, style)
  rng = np.random.default_rng(seed)
  n = len(battles)
  boot = np.zeros((rounds, len(full.models)))
  for r in tqdm(range(rounds), desc="bootstrap", disable=not show_progress):
    counts = np.bincount(rng.integers(0, n, n), minlength=n)
    boot[r] = fit_bradley_terry(battles, baseline, style, counts, full.models).elo
  out = {}
  for i, model in enumerate(full.models):
    if model == baseline:
      continue
    lo, hi = (np.percentile(boot[:, i], [2.5, 97.5]) if rounds else (full.elo[i], full.elo[i]))
    mine = battles.model_b == model
    out[model] = {
        "score": float(100 * win_rate(full.elo[i])),
        "ci_low": float(100 * win_rate(lo)), "ci_high": float(100 * win_rate(hi)),
        "elo": float(full.elo[i]), "elo_ci_low": float(lo), "elo_ci_high": float(hi),
        "num_battles": int(mine.sum()),
        "wins": int((mine & (battles.winner == "model_b")).sum()),
        "losses": int((mine & (battles.winner == "model_a")).sum()),
        "ties": int((mine & (battles.winner == "tie")).sum()),
        "bootstrap_rounds": rounds, "style_control": style is not None,
    }
    if full.style_coef is not None:
      out[model]["style_coef"] = dict(zip(STYLE_FEATURES, map(float, full.style_coef)))
  return out


def score_judgments(records: Sequence[Mapping[str, Any]], baseline: str = BASELINE, rounds: int = 100,
                    seed: int = 42, style_control: bool = False,
                    answers: Optional[Mapping[str, Mapping[str, str]]] = None) -> dict[str, dict[str, Any]]:
  """`score_battles` over judgment records; `answers[model][qid]` (baseline included) is needed
  only for style control."""
  for i, row in enumerate(records):
    check_judgment(row, f"judgment {i}")
  battles = battles_from_judgments(records, baseline)
  style = None
  if style_control:
    if answers is None:
      raise ValueError("style control needs the answers of every model and of the baseline")
    style = style_matrix(battles, answers)
  scores = score_battles(battles, baseline, rounds, seed, style)
  for model, entry in scores.items():
    mine = [r for r in records if r["model"] == model]
    entry["num_questions"] = len(mine)
    entry["failed_games"] = sum(1 for r in mine for g in r["games"] if g.get("score") not in LABELS)
  return scores
