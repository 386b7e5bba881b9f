"""HelpSteer / HelpSteer2 / HelpSteer3 builders on the real card rows, the readers (jsonl, json,
parquet, folders, the `datasets` loader) and malformed-row handling (error names the row; skip
mode counts)."""

import itertools
import json

import pytest

from helpsteer_jax.data.examples import MISSING_LABEL, BuildStats, ChatExample, DataError, RowError
from helpsteer_jax.data.helpsteer2 import (
  HELPSTEER2_ATTRIBUTES,
  STEERLM_ATTRIBUTES,
  AttributeConditionedSFTBuilder,
  AttributeRegressionBuilder,
  HelpSteer2PreferenceBuilder,
  attribute_string,
  parse_prompt,
)
from helpsteer_jax.data.helpsteer3 import (
  EditBuilder,
  EditQualityBuilder,
  FeedbackBuilder,
  PreferenceBuilder,
  helpfulness_level,
)
from helpsteer_jax.data.pipeline import build_examples, default_data_config, load_examples
from helpsteer_jax.data.sources import SourceSpec, read_rows
from helpsteer_jax.formats.prompts import edit_request, feedback_request
from helpsteer_jax.testing.helpsteer_rows import helpsteer_file, helpsteer_rows


def _build(builder, row, where="row"):
  stats = BuildStats()
  return builder(row, where, stats), stats


def test_feedback_examples(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer3_feedback")[0]
  examples, _ = _build(FeedbackBuilder(), row)
  expected = [(row[f"response{s}"], f) for s in "12" for f in row[f"feedback{s}"]]
  assert len(examples) == len(expected) == 6
  for example, (response, feedback) in zip(examples, expected):
    # The prompt is exactly the search's feedback request; the target is the annotator's text.
    assert list(example.messages[:-1]) == feedback_request(row["context"], response)
    assert example.messages[-1] == {"role": "assistant", "content": feedback}
    assert example.loss_turns == (len(example.messages) - 1,)
    assert helpfulness_level(example.messages[-1]["content"]) in ("slightly", "partially", "mostly")


def test_feedback_without_opening_is_counted():
  row = {
    "context": [{"role": "user", "content": "hi"}],
    "response1": "a",
    "response2": "b",
    "feedback1": ["The response is mostly helpful. Fine.", "Good answer."],
    "feedback2": [""],
  }
  examples, stats = _build(FeedbackBuilder(), row)
  assert len(examples) == 1
  assert stats.counts["feedback_without_opening"] == 1 and stats.counts["feedback_empty"] == 1
  examples, _ = _build(FeedbackBuilder(require_opening=False), row)
  assert len(examples) == 2


def test_edit_uses_every_feedback_permutation(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer3_edit")[0]
  assert len(row["feedback"]) == 3
  examples, _ = _build(EditBuilder(), row)
  assert len(examples) == 6
  prompts = [ex.messages[0]["content"] for ex in examples]
  assert len(set(prompts)) == 6
  for example, order in zip(examples, itertools.permutations(row["feedback"])):
    assert list(example.messages[:-1]) == edit_request(row["context"], row["original_response"], order)
    assert example.messages[-1]["content"] == row["edited_response"]
  limited, _ = _build(EditBuilder(max_permutations=2), row)
  assert [ex.messages for ex in limited] == [ex.messages for ex in examples[:2]]


def test_edit_quality_pairs(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer3_edit_quality")[0]
  pairs, _ = _build(EditQualityBuilder(), row)
  assert [p.kind for p in pairs] == ["bad_edit", "no_edit"]
  prompt = edit_request(row["context"], row["original_response"], row["feedback"])
  for pair in pairs:
    assert list(pair.chosen[:-1]) == prompt and list(pair.rejected[:-1]) == prompt
    assert pair.chosen[-1]["content"] == row["good_edited_response"]
    assert pair.label_magnitude == 1.0
  assert pairs[0].rejected[-1]["content"] == row["bad_edited_response"]
  assert pairs[1].rejected[-1]["content"] == row["original_response"]
  permuted, _ = _build(EditQualityBuilder(permute_feedback=True), row)
  assert len(permuted) == 12


def test_preference_pairs_sign_magnitude_and_ties(bundled_data):
  rows = helpsteer_rows(bundled_data, "helpsteer3_preference")
  assert [r["overall_preference"] for r in rows] == [-2, -2]
  for row in rows:
    (pair,), _ = _build(PreferenceBuilder(), row)
    assert pair.chosen[-1]["content"] == row["response1"]  # negative: response 1 is better
    assert pair.rejected[-1]["content"] == row["response2"]
    assert pair.label_magnitude == 2.0
    assert list(pair.chosen[:-1]) == row["context"]
  flipped = dict(rows[0], overall_preference=3)
  (pair,), _ = _build(PreferenceBuilder(), flipped)
  assert pair.chosen[-1]["content"] == rows[0]["response2"] and pair.label_magnitude == 3.0
  tie = dict(rows[0], overall_preference=0)
  pairs, stats = _build(PreferenceBuilder(), tie)
  assert pairs == [] and stats.counts["preference_ties"] == 1
  pairs, stats = _build(PreferenceBuilder(min_magnitude=3), rows[0])
  assert pairs == [] and stats.counts["preference_below_min"] == 1


def test_helpsteer2_preference(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer2_preference")[0]
  (pair,), _ = _build(HelpSteer2PreferenceBuilder(), row)
  assert row["preference_strength"] == 1
  assert pair.chosen[-1]["content"] == row["response_2"] and pair.label_magnitude == 1.0
  assert pair.chosen[0] == {"role": "user", "content": row["prompt"]}
  pairs, stats = _build(HelpSteer2PreferenceBuilder(split="validation"), row)
  assert pairs == [] and stats.counts["rows_in_split/train"] == 1


def test_attribute_targets_with_missing(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer2_default")[0]
  (five,), _ = _build(AttributeRegressionBuilder(HELPSTEER2_ATTRIBUTES), row)
  assert five.targets == (3.0, 4.0, 4.0, 2.0, 1.0)
  (nine,), stats = _build(AttributeRegressionBuilder(STEERLM_ATTRIBUTES), row)
  assert nine.targets == (MISSING_LABEL,) * 4 + (3.0, 4.0, 4.0, 2.0, 1.0)
  assert stats.counts["attribute_labels_missing"] == 4
  assert [m["role"] for m in nine.messages] == ["user", "assistant"]
  partial = dict(row, correctness=None)
  del partial["verbosity"]
  (ex,), _ = _build(AttributeRegressionBuilder(), partial)
  assert ex.targets == (3.0, MISSING_LABEL, 4.0, 2.0, MISSING_LABEL)
  with pytest.raises(RowError, match="'helpfulness' = 7 is outside"):
    _build(AttributeRegressionBuilder(), dict(row, helpfulness=7))


def test_steerlm_conditioning_in_system_turn(bundled_data):
  row = helpsteer_rows(bundled_data, "helpsteer2_default")[0]
  (ex,), _ = _build(AttributeConditionedSFTBuilder(), row)
  assert isinstance(ex, ChatExample)
  assert ex.messages[0] == {
    "role": "system",
    "content": "helpfulness:3,correctness:4,coherence:4,complexity:2,verbosity:1",
  }
  assert ex.messages[-1]["content"] == row["response"] and ex.loss_turns == (2,)
  values = {"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 2}
  assert attribute_string(values) == "helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2"


def test_parse_multi_turn_prompt():
  prompt = "q1\n<extra_id_1>Assistant\na1\n<extra_id_1>User\nq2"
  assert parse_prompt(prompt) == [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "q2"},
  ]
  with pytest.raises(RowError, match="ends with an assistant turn"):
    parse_prompt("q1\n<extra_id_1>Assistant\na1")
  with pytest.raises(RowError, match="expected 'Assistant'"):
    parse_prompt("q1\n<extra_id_1>User\nq2")


# -- readers and malformed rows ------------------------------------------------------------------


def _bad_feedback_file(tmp_path, bundled_data):
  """The real feedback row, then a line that is not JSON, then one missing `context`."""
  good = helpsteer_file(bundled_data, "helpsteer3_feedback").read_text().strip()
  broken = json.loads(good)
  del broken["context"]
  path = tmp_path / "feedback.jsonl"
  path.write_text("\n".join([good, '{"context": [', json.dumps(broken), good]) + "\n")
  return path


def test_malformed_rows_raise_with_location(tmp_path, bundled_data):
  path = _bad_feedback_file(tmp_path, bundled_data)
  with pytest.raises(DataError, match=rf"{path}:2: not valid JSON .* expected one JSON object per line"):
    build_examples(SourceSpec(path=str(path)), FeedbackBuilder())
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
  with pytest.raises(DataError, match=rf"{path}:2: missing field 'context'"):
    build_examples(SourceSpec(path=str(path)), FeedbackBuilder())


def test_malformed_rows_skipped_and_counted(tmp_path, bundled_data):
  config = default_data_config()
  config.path = str(_bad_feedback_file(tmp_path, bundled_data))
  config.on_error = "skip"
  examples, stats = load_examples(config)
  assert len(examples) == 12  # the two good rows, 6 feedbacks each
  assert stats.counts["rows_read"] == 3  # the bad JSON line never becomes a row
  assert stats.counts["rows_skipped"] == 2
  assert stats.counts["skipped/bad_json"] == 1 and stats.counts["skipped/malformed_row"] == 1
  assert ":3: missing field 'context'" in stats.summary()


@pytest.mark.parametrize(
  "bad, message",
  [
    ({"feedback": "one string"}, "field 'feedback' must be a list of strings"),
    ({"edited_response": 5}, "field 'edited_response' must be a string, got int"),
    (
      {"context": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
      "ends with a 'assistant' turn; expected a 'user' turn",
    ),
    ({"context": [{"role": "robot", "content": "x"}]}, "has role 'robot'"),
  ],
)
def test_edit_row_type_errors(bundled_data, bad, message):
  row = dict(helpsteer_rows(bundled_data, "helpsteer3_edit")[0], **bad)
  with pytest.raises(RowError, match=message):
    _build(EditBuilder(), row)


def test_parquet_folder_and_datasets_loader_agree(tmp_path, bundled_data):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq

  jsonl = helpsteer_file(bundled_data, "helpsteer3_preference")
  rows = helpsteer_rows(bundled_data, "helpsteer3_preference")
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
  (tmp_path / "part-1.jsonl").write_text(jsonl.read_text())
  from_folder = [r.data for r in read_rows(SourceSpec(path=str(tmp_path)))]
  assert from_folder == rows + rows  # parquet file first (sorted names), then the jsonl
  wheres = [r.where for r in read_rows(SourceSpec(path=str(tmp_path)))]
  assert wheres[0].endswith("part-0.parquet[row 0]") and wheres[3].endswith("part-1.jsonl:2")
  # The hub code path, through datasets' own loader on the same file (no network).
  hub = [r for r in read_rows(SourceSpec(hub_name="json", data_files=str(jsonl), split="train"))]
  assert [r.data for r in hub] == rows
  assert hub[1].where == "json:train[row 1]"
  examples, _ = build_examples(SourceSpec(hub_name="json", data_files=str(jsonl)), PreferenceBuilder())
  assert len(examples) == 2
  # A `.json` file holding a list of rows.
  (tmp_path / "array.json").write_text(json.dumps(rows))
  assert [r.data for r in read_rows(SourceSpec(path=str(tmp_path / "array.json")))] == rows


def test_hub_failure_names_the_source():
  with pytest.raises(DataError, match="nvidia/NoSuchDataSet/edit:train: cannot load"):
    list(read_rows(SourceSpec(hub_name="nvidia/NoSuchDataSet", subset="edit")))
