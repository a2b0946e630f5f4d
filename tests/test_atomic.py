import json
import os

import pytest

from daemon.atomic import append_jsonl, iter_jsonl, repair_torn_tail, write_json_atomic


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    write_json_atomic(p, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_json_atomic(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_torn_last_line_is_cut_and_skipped(tmp_path):
    p = tmp_path / "r.jsonl"
    append_jsonl(p, {"a": 1})
    append_jsonl(p, {"a": 2})
    with open(p, "a") as fh:
        fh.write('{"a": 3, "b"')  # a writer killed mid-line
    assert [r["a"] for r in iter_jsonl(p)] == [1, 2]
    assert repair_torn_tail(p) == len('{"a": 3, "b"')
    assert p.read_text().count("\n") == 2
    assert repair_torn_tail(p) == 0
