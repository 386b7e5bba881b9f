"""Judges: an OpenAI-compatible HTTP endpoint, or local models (a reward model, a generative judge).

Two interfaces cover every judge the benchmarks use:
- `ChatJudge.chat(requests) -> replies`: writes a judgment text for each chat request (the
  benchmark's own judge prompt); `HttpJudge` and `GenerativeJudge` implement it.
- `ScoreJudge.score(conversations, responses) -> list[float]`: one scalar per response;
  `RewardModelJudge` (a reward model, or the policy's 0-4 digit judgment) implements it, and the
  benchmarks turn score differences into verdicts, ratings or preferences.
"""
