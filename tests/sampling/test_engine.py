"""The decode engine on a tiny random model: per-slot positions, block reads, refill, keys, stats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.sampling.engine import EarlyStop, Engine, EngineSettings, Request
from helpsteer_jax.sampling.engine_api import resolve_layout
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.rules import sample_rows
from helpsteer_jax.sampling.sampler import SamplingSettings
from helpsteer_jax.testing.decode_reference import greedy_reference

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _run(model, requests, **settings):
  engine = Engine(model, EngineSettings(**settings))
  for r in requests:
    engine.submit(r)
  engine.run()
  return engine


def test_greedy_rows_at_their_own_positions_read_in_blocks(model):
  # Blocks of 4 positions: the prompts and answers span several, and rows of different lengths
  # decode side by side with no padding; more requests than slots forces refills.
  prompts = [[5, 6, 7], list(range(1, 14)), [42], [9] * 6, [3, 1, 4, 1, 5]]
  greedy = SamplingSettings(max_new_tokens=9)
  requests = [Request(p, greedy, sample_key(0, i)) for i, p in enumerate(prompts)]
  engine = _run(model, requests, num_slots=2, attention_block=4, steps_per_call=3)
  for prompt, request in zip(prompts, requests):
    assert request.results == [greedy_reference(model, prompt, 9)]
  stats = engine.stats()
  assert stats["stages"][""]["tokens"] == 5 * 9
  # Each sample's first token comes from its prefill; the other 8 from decode steps.
  assert stats["decode_tokens"] == 5 * 8
  assert 0 < stats["slot_use"] <= 1


def test_a_request_gives_the_same_tokens_alone_and_in_a_busy_engine(model):
  sampled = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=0.9)
  target = lambda: Request([7, 8, 9, 10], sampled, sample_key(3, "target"), n=3)
  alone = target()
  _run(model, [alone], num_slots=4, attention_block=8)
  # Neighbours of other lengths, settings and stop rules come and go around it.
  busy = target()
  neighbours = [
    Request(
      list(range(1, 2 + 5 * i)),
      SamplingSettings(max_new_tokens=3 + 4 * i, temperature=0.7 * (i % 2), top_k=5 if i == 2 else None),
      sample_key(3, i),
      n=2,
    )
    for i in range(4)
  ]
  _run(model, neighbours[:2] + [busy] + neighbours[2:], num_slots=4, attention_block=8)
  assert busy.results == alone.results
  assert len({tuple(x) for x in alone.results}) > 1  # its samples differ from each other


def test_stop_tokens_end_a_sample_and_callbacks_chain_requests(model):
  settings = SamplingSettings(max_new_tokens=10)
  free = Request([5, 6, 7], settings, sample_key(0))
  _run(model, [free])
  stop = free.results[0][3]
  engine = Engine(model, EngineSettings(num_slots=2, stop_token_ids=(stop, 999)))
  seen = []

  def follow_up(request, samples):
    seen.append(samples)
    if len(seen) == 1:  # submitted from inside the engine's run: it joins the same run
      engine.submit(Request(samples[0] + [1], settings, sample_key(1), on_done=follow_up))

  engine.submit(Request([5, 6, 7], settings, sample_key(0), on_done=follow_up))
  engine.run()
  assert seen[0] == [free.results[0][:3]] and len(seen) == 2


def test_per_row_sampling_rules():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 4))
  keys = jax.random.split(jax.random.key(0), 400).reshape(100, 4)
  # 100 draws in one compiled call (eagerly, each draw took most of a second).
  draw = jax.jit(
    jax.vmap(
      lambda k: sample_rows(
        logits, k, jnp.asarray([0.0, 1.0, 1.0, 1.0]), jnp.asarray([0, 1, 0, 0]), jnp.asarray([1.0, 1.0, 0.7, 1.0])
      )
    )
  )
  picks = np.asarray(draw(keys))
  assert (picks[:, 0] == 0).all()  # greedy
  assert (picks[:, 1] == 0).all()  # top-k 1
  assert set(picks[:, 2]) == {0, 1}  # top-p 0.7 keeps 0.5 + 0.3
  assert set(picks[:, 3]) == {0, 1, 2, 3}  # the full distribution
  # A row's draw does not depend on the other rows' settings.
  one = sample_rows(logits[:1], keys[0][3:], jnp.asarray([1.0]), jnp.asarray([0]), jnp.asarray([1.0]))
  assert int(one[0]) == int(picks[0, 3])


def test_keys_name_samples_and_bad_requests_fail(model):
  assert (sample_key(0, "a", "draft", 1) == sample_key(0, "a", "draft", 1)).all()
  assert not (sample_key(0, "a", "draft", 1) == sample_key(0, "a", "draft", 2)).all()
  engine = Engine(model, EngineSettings(num_slots=2))
  with pytest.raises(ValueError, match="prompt is empty"):
    engine.submit(Request([], SamplingSettings(), sample_key(0)))
  with pytest.raises(ValueError, match="exceeds the model's context"):
    engine.submit(Request([1] * 500, SamplingSettings(max_new_tokens=64), sample_key(0)))


def test_layout_choice_keeps_the_tokens(model):
  from helpsteer_jax.models.llama import with_unrolled_layers

  unrolled = with_unrolled_layers(model)
  assert not unrolled.config.scan_layers and with_unrolled_layers(unrolled) is unrolled
  ids = jnp.asarray([[3, 1, 4, 1, 5, 9]])
  np.testing.assert_allclose(np.asarray(unrolled(ids)), np.asarray(model(ids)), atol=1e-5)
  # "model" keeps the model's scanned layers; "unrolled" decodes from the list; auto on CPU
  # switches on the list's layers for several slots (and prefills on them), and fuses its input
  # projections for a single slot.
  assert Engine(model, EngineSettings(num_slots=2, layout="model")).model_layout_scanned
  assert not Engine(model, EngineSettings(num_slots=2, layout="unrolled")).model_layout_scanned
  auto = Engine(model, EngineSettings(num_slots=2))
  assert auto.layout == "switched" and not auto.model_layout_scanned
  assert auto.prefill.model is model  # a judge over `model` shares it (scoring/selectors.py)
  assert Engine(model, EngineSettings(num_slots=1)).layout == "fused"
  greedy = SamplingSettings(max_new_tokens=8)
  sampled = SamplingSettings(max_new_tokens=8, temperature=1.0, top_k=20)
  # Fused projections serve a single slot only.
  for settings, slots, layouts in (
    (greedy, 2, ("model", "unrolled", "switched")),
    (sampled, 2, ("model", "switched")),
    (greedy, 1, ("model", "unrolled", "fused")),
    (sampled, 1, ("model", "unrolled", "fused")),
  ):
    runs = []
    for layout in layouts:
      request = Request([5, 6, 7, 8], settings, sample_key(0), n=2)
      _run(model, [request], num_slots=slots, layout=layout)
      runs.append(request.results)
    assert all(run == runs[0] for run in runs), (settings, slots)
  with pytest.raises(ValueError, match="layout='wide'"):
    EngineSettings(layout="wide")
  with pytest.raises(ValueError, match="single slot"):
    EngineSettings(layout="fused", num_slots=4)


def test_a_decode_call_copies_no_cache_in_either_layout(model):
  # Unrolled, the layers' attention loops would share one cache buffer and XLA would copy the whole
  # cache at every step to keep it for the in-place append (decode_attention.loop_over_blocks).
  # The compiled decode call of the engine (its slots donated) must hold no copy of a cache array.
  from helpsteer_jax.sampling import engine_api

  for layout, slots in (("model", 2), ("unrolled", 2), ("switched", 2), ("fused", 1)):
    engine = Engine(model, EngineSettings(num_slots=slots, attention_block=8, layout=layout))
    engine.submit(Request([5, 6, 7], SamplingSettings(max_new_tokens=4), sample_key(0)))
    engine._fill()
    device, state = engine.device, engine._state
    cache_k = state.cache.k
    shape = f"{cache_k.dtype}[{','.join(map(str, cache_k.shape))}]".replace("float32", "f32")
    hlo = (
      engine_api.decode_steps.lower(device.graphdef, device.params, state, jnp.asarray(True), settings=engine.settings)
      .compile()
      .as_text()
    )
    assert f"{shape}" in hlo
    copies = [line for line in hlo.splitlines() if " copy(" in line and f"= {shape}" in line]
    assert copies == [], (layout, copies)


def test_prompts_that_start_alike_reuse_kept_chunks_with_the_same_tokens(model):
  # Chunks of 4: the second prompt shares its first two chunks with the first, the third is the
  # first again (the search's drafts and greedy reference), and the sampled request has 3
  # samples. Keeping no chunks recomputes everything and must give the same tokens.
  first = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]

  def requests():
    return [
      Request(first, SamplingSettings(max_new_tokens=6), sample_key(0, "a"), tag="first"),
      Request(
        first[:8] + [30, 31, 32],
        SamplingSettings(max_new_tokens=6, temperature=0.9),
        sample_key(0, "b"),
        n=3,
        tag="second",
      ),
      Request(first, SamplingSettings(max_new_tokens=6), sample_key(0, "c"), tag="again"),
    ]

  runs = []
  for keep in (1024, 0):
    batch = requests()
    runs.append(
      ([r.results for r in batch], _run(model, batch, num_slots=2, prefill_chunk=4, keep_prefill_mb=keep).stats())
    )
  (kept, stats), (recomputed, plain) = runs
  assert kept == recomputed
  stages = stats["stages"]
  assert stages["first"]["prefill_tokens"] == 10
  assert stages["second"]["prefill_tokens"] == 3 and stages["second"]["reused_prompt_tokens"] == 8 + 2 * 11
  assert stages["again"]["prefill_tokens"] == 0 and stages["again"]["reused_prompt_tokens"] == 10
  assert plain["prefill_tokens"] == 10 + 3 * 11 + 10 and plain["reused_prompt_tokens"] == 0
  with pytest.raises(ValueError, match="prefill_chunk=0"):
    EngineSettings(prefill_chunk=0)


def test_prompt_buckets_pad_long_prompts_by_less_than_64():
  from helpsteer_jax.sampling.settings import prompt_bucket

  assert [prompt_bucket(n) for n in (1, 16, 17, 100, 128)] == [16, 16, 32, 128, 128]
  assert [prompt_bucket(n) for n in (129, 192, 193, 500, 1000)] == [192, 192, 256, 512, 1024]
  assert all(0 <= prompt_bucket(n) - n < 64 for n in range(129, 3000))


def test_the_tail_decodes_in_a_smaller_program_with_the_same_tokens(model):
  # 16 slots; requests of different lengths, so that most slots empty long before the last ends.
  # Over 8 slots the rows are bitwise those over 16 on CPU (see EngineSettings.tail_slots), and
  # a request submitted from a callback brings the full program back.
  def requests():
    out = [
      Request([3 + i, 4, 5], SamplingSettings(max_new_tokens=2 + 3 * i, temperature=0.8), sample_key(5, i), n=1)
      for i in range(16)
    ]
    late = Request([9, 8, 7, 6], SamplingSettings(max_new_tokens=20, temperature=0.8), sample_key(5, "late"), n=12)
    out[12].on_done = lambda request, samples: engine.submit(late)  # arrives in the tail
    return out, late

  runs = []
  for tail in (0, 8):
    batch, late = requests()
    engine = Engine(model, EngineSettings(num_slots=16, tail_slots=tail, attention_block=8))
    for r in batch:
      engine.submit(r)
    engine.run()
    runs.append(([r.results for r in batch] + [late.results], engine.stats()))
  (plain, plain_stats), (tailed, tail_stats) = runs
  assert tailed == plain
  assert plain_stats["tail_steps"] == 0 and tail_stats["tail_steps"] > 0
  assert tail_stats["decode_steps"] == plain_stats["decode_steps"]
  assert tail_stats["decode_tokens"] == plain_stats["decode_tokens"]
  assert tail_stats["slot_use"] > plain_stats["slot_use"]
  assert tail_stats["resizes"] >= 2  # shrank, grew back for the late request (12 samples), ...
  assert Engine(model, EngineSettings(num_slots=16)).free_slots == 16
  with pytest.raises(ValueError, match="tail_slots=-1"):
    EngineSettings(tail_slots=-1)


def test_auto_layout_by_backend():
  # What `auto` picks for a model whose weights sit on each kind of device (measured on CPU and on
  # an H200: experiments/benchmarks/results/gpu_session.md); several devices keep the model's own.
  class Device:
    def __init__(self, platform):
      self.platform = platform

  class Weights:
    def __init__(self, platform):
      self._devices = {Device(platform)}

    def devices(self):
      return self._devices

  class Model:
    def __init__(self, platform, sharding=None):
      self.embed = {Ellipsis: Weights(platform)}
      self.sharding = sharding

  class Sharding:
    class mesh:  # noqa: N801 - a stand-in for a mesh of 8 devices
      size = 8

  choose = lambda model, slots: resolve_layout(model, EngineSettings(num_slots=slots))
  assert [choose(Model("cpu"), n) for n in (1, 4)] == ["fused", "switched"]
  assert [choose(Model("gpu"), n) for n in (1, 64)] == ["unrolled", "unrolled"]
  assert choose(Model("tpu"), 8) == "model" and choose(Model("gpu", Sharding()), 8) == "model"


def test_an_early_stop_ends_samples_on_device_and_leaves_the_others(model):
  settings = SamplingSettings(max_new_tokens=12, temperature=1.0)
  plain = [Request([5, 6, 7], settings, sample_key(1), n=4)]
  _run(model, plain, num_slots=3, steps_per_call=2)
  full = plain[0].results
  stop_odd_first = EarlyStop(after_tokens=3, stop=lambda tokens: tokens[0] % 2 == 1)
  early = Request([5, 6, 7], settings, sample_key(1), n=4, early_stop=stop_odd_first)
  engine = _run(model, [early], num_slots=3, steps_per_call=2)
  rejected = {j for j, tokens in enumerate(full) if tokens[0] % 2 == 1}
  assert 0 < len(rejected) < 4 and early.stopped_early == rejected
  for j, tokens in enumerate(early.results):
    if j in rejected:  # checked after the decode call that passed 3 tokens: 3 or 4 of them
      assert tokens == full[j][: len(tokens)] and 3 <= len(tokens) <= 4
    else:
      assert tokens == full[j]
  assert engine.stats()["stages"][""]["stopped_early"] == len(rejected)
