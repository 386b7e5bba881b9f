"""Where the search's prompts about one conversation, and about one response, stop sharing tokens.

The Feedback, Edit and judge prompts about a draft quote the conversation, then the draft, then
each role's own instruction (formats/plain.py). The engine keeps prefill chunks and reuses them by
prefix (sampling/chunked_prefill.py), but a chunk that holds the end of the shared part also holds
the start of a prompt's own text, so without help every prompt computes that chunk again, and a
judge prompt about an edit shares nothing with the others because its conversation part is shorter
than one chunk. Breaking each prompt's chunks where its shared part ends makes all of it reusable.

The shared parts are found from the prompts themselves, as token prefixes:
  - of a conversation: where a role's prompt about two different probe responses stops agreeing
    (where the response begins), common to every role that prefills on the same model;
  - of a response: where the roles' prompts about that response stop agreeing (the Edit prompt
    probed with two different feedbacks, so that a lone Edit role breaks where its feedback starts).
A prompt then breaks at the length of each prefix it starts with. Both depend only on the
conversation and the response, never on what ran before, so a request's chunks, and so its tokens
and scores, are its own whatever else the engine serves.

Token ids: lists of int; a prompt builder maps (conversation, response) to the prompt's ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from helpsteer_jax.formats.messages import Conversation

PromptBuilder = Callable[[Conversation, str], Sequence[int]]
# Two responses (and two feedbacks) that differ from their first character on.
PROBES = ("x", "y")


def common_prefix(sequences: Sequence[Sequence[int]]) -> tuple[int, ...]:
  """The longest token prefix that every sequence starts with."""
  if not sequences:
    return ()
  first = sequences[0]
  length = min(len(s) for s in sequences)
  for s in sequences[1:]:
    for i in range(length):
      if s[i] != first[i]:
        length = i
        break
  return tuple(int(t) for t in first[:length])


class SharedPrefixes:
  """The shared prefixes of the prompts that one model prefills. `builders` maps a name to a
  prompt builder over (conversation, response); `response_probes` are the builders whose prompt
  goes on past the response with content of its own (the Edit prompt's feedback), given as
  (conversation, response, probe) -> ids."""

  def __init__(
    self,
    builders: dict[str, PromptBuilder],
    response_probes: Sequence[Callable[[Conversation, str, str], Sequence[int]]] = (),
  ):
    self.builders = dict(builders)
    self.response_probes = list(response_probes)

  def of_conversation(self, conversation: Conversation) -> tuple[int, ...]:
    """Tokens every prompt about `conversation` starts with, whatever the response."""
    prompts = [build(conversation, probe) for build in self.builders.values() for probe in PROBES]
    return common_prefix(prompts) if len(prompts) > 1 else ()

  def of_response(self, conversation: Conversation, response: str) -> tuple[int, ...]:
    """Tokens every prompt about `response` starts with."""
    prompts = [build(conversation, response) for build in self.builders.values()]
    prompts += [probe_build(conversation, response, probe) for probe_build in self.response_probes for probe in PROBES]
    return common_prefix(prompts) if len(prompts) > 1 else ()
