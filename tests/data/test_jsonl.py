"""The one JSONL module: file:line errors, a torn last line dropped only where asked, appends that
survive a crash mid-write."""

import pytest

from helpsteer_jax.data.examples import DataError
from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl, read_jsonl_rows


def test_rows_with_line_numbers_and_named_errors(tmp_path):
  path = tmp_path / "rows.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2}\n')
  assert read_jsonl_rows(path) == [(1, {"a": 1}), (3, {"a": 2})]
  path.write_text('{"a": 1}\n[1, 2]\n')
  with pytest.raises(DataError, match=r"rows.jsonl:2: expected a JSON object, got list"):
    read_jsonl(path)
  assert read_jsonl(path, objects=False) == [{"a": 1}, [1, 2]]
  path.write_text('{"a": 1}\n{"a": \n')
  with pytest.raises(DataError, match=r"rows.jsonl:2: not valid JSON \(Expecting value"):
    read_jsonl(path)


def test_a_torn_tail_is_dropped_only_at_the_end(tmp_path):
  path = tmp_path / "log.jsonl"
  path.write_text('{"a": 1}\n{"a": 2, "tr')
  assert read_jsonl(path, torn_tail_ok=True) == [{"a": 1}]
  with pytest.raises(DataError, match="not valid JSON"):
    read_jsonl(path)
  path.write_text('{"a": 1}\n{"a": 2, "tr\n{"a": 3}\n')
  with pytest.raises(DataError, match=r"log.jsonl:2: corrupt line in the middle of the file"):
    read_jsonl(path, torn_tail_ok=True)


def test_the_appender_cuts_a_half_written_line_on_reopen(tmp_path):
  path = tmp_path / "sub" / "out.jsonl"
  log = JsonlAppender(path)
  log.append([{"id": 1}, {"id": 2}])
  with open(path, "a") as f:
    f.write('{"id": 3, "te')
  again = JsonlAppender(path)
  assert path.read_text().endswith("}\n") and again.read() == [{"id": 1}, {"id": 2}]
  again.append([{"id": 3}])
  assert [r["id"] for r in JsonlAppender(path).read()] == [1, 2, 3]
