"""Adapters and load_pairs on local files in the real PKU-SafeRLHF (both releases) and UltraFeedback schemas."""

from __future__ import annotations

import csv
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bfpo.data import DataValidationError, PairRecord
from bfpo.data.adapters import (
    LoadReport,
    detect_schema,
    from_generic,
    from_pairs,
    from_pku_saferlhf,
    from_ultrafeedback,
    load_pairs,
    load_pairs_with_report,
)

HARM_CATS = ["Animal Abuse", "Cybercrime", "Violence"]


def pku_v0_row(i: int = 0, better: int = 1, safer: int = 0, safe0: bool = True, safe1: bool = False) -> dict:
    """A row of the 2023 PKU-SafeRLHF release (exactly its columns)."""
    return {
        "prompt": f"How do I pick lock number {i}?",
        "response_0": f"I can't help with lock {i}.",
        "response_1": f"Use a tension wrench on lock {i}.",
        "is_response_0_safe": safe0,
        "is_response_1_safe": safe1,
        "better_response_id": better,
        "safer_response_id": safer,
    }


def pku_v1_row(i: int = 0, better: int = 0, safer: int = 1, safe0: bool = False, safe1: bool = True) -> dict:
    """A row of the v1.0 release (2024): extra source, harm-category and severity columns."""
    row = pku_v0_row(i, better, safer, safe0, safe1)
    row.update(
        {
            "prompt_source": "BeaverTails",
            "response_0_source": "Alpaca-7B",
            "response_1_source": "Alpaca3-8B",
            "response_0_harm_category": {c: c == "Cybercrime" for c in HARM_CATS},
            "response_1_harm_category": {c: False for c in HARM_CATS},
            "response_0_severity_level": 2,
            "response_1_severity_level": 0,
            "response_0_sha256": "a" * 64,
            "response_1_sha256": "b" * 64,
        }
    )
    return row


def uf_row(i: int = 0) -> dict:
    """A row of HuggingFaceH4/ultrafeedback_binarized."""
    prompt = f"Write a haiku about the number {i}."
    return {
        "prompt": prompt,
        "prompt_id": f"id{i}",
        "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"Number {i} / soft"}],
        "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"no {i}"}],
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"Number {i} / soft"}],
        "score_chosen": 8.5,
        "score_rejected": 3.0,
    }


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return str(path)


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


# ------------------------------------------------------------------------------------ row adapters
def test_pku_v0_chosen_is_more_helpful_with_its_safety_label():
    rec = from_pku_saferlhf(pku_v0_row(3, better=1, safer=0), "f row 0")
    assert rec.chosen == "Use a tension wrench on lock 3." and rec.rejected == "I can't help with lock 3."
    assert (rec.safe_chosen, rec.safe_rejected) == (0.0, 1.0)
    assert rec.kind == "safety" and rec.source == "pku_saferlhf"
    assert rec.metadata == {"safer": "rejected", "release": "v0"}


def test_pku_v1_metadata_maps_harm_and_severity_to_chosen_rejected():
    rec = from_pku_saferlhf(pku_v1_row(better=0, safer=1), "f row 0")
    assert rec.chosen.startswith("I can't") and (rec.safe_chosen, rec.safe_rejected) == (0.0, 1.0)
    m = rec.metadata
    assert m["safer"] == "rejected" and m["release"] == "v1.0" and m["prompt_source"] == "BeaverTails"
    assert m["chosen_harm_category"]["Cybercrime"] is True
    assert not any(m["rejected_harm_category"].values())
    assert (m["chosen_severity_level"], m["rejected_severity_level"]) == (2, 0)
    assert (m["chosen_source"], m["rejected_source"]) == ("Alpaca-7B", "Alpaca3-8B")


def test_pku_safer_equals_better():
    rec = from_pku_saferlhf(pku_v0_row(better=0, safer=0), "w")
    assert rec.metadata["safer"] == "chosen" and rec.safe_chosen == 1.0


def test_pku_missing_column_names_field_and_where():
    row = pku_v0_row()
    del row["is_response_1_safe"]
    with pytest.raises(DataValidationError, match=r"pku\.jsonl row 4: missing field 'is_response_1_safe'"):
        from_pku_saferlhf(row, "pku.jsonl row 4")


@pytest.mark.parametrize("bad", [2, "x"])
def test_pku_bad_response_id(bad):
    with pytest.raises(DataValidationError, match="row 1: field 'better_response_id' must be 0 or 1"):
        from_pku_saferlhf(pku_v0_row() | {"better_response_id": bad}, "row 1")


def test_pku_null_field_is_missing():
    # a table (datasets) gives every row every column, null where the row had none: null reads as missing
    with pytest.raises(DataValidationError, match=r"row 1: missing field 'better_response_id' \(null\)"):
        from_pku_saferlhf(pku_v0_row() | {"better_response_id": None}, "row 1")


def test_ultrafeedback_prompt_is_context_and_both_safe():
    rec = from_ultrafeedback(uf_row(2), "uf row 0")
    assert rec.prompt == [{"role": "user", "content": "Write a haiku about the number 2."}]
    assert rec.chosen == "Number 2 / soft" and rec.rejected == "no 2"
    assert (rec.safe_chosen, rec.safe_rejected, rec.kind) == (1.0, 1.0, "helpful")
    assert rec.metadata == {"prompt_id": "id2", "score_chosen": 8.5, "score_rejected": 3.0}


def test_ultrafeedback_multi_turn_and_text_columns():
    row = uf_row()
    ctx = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]
    row["chosen"] = ctx + [{"role": "assistant", "content": "A"}]
    row["rejected"] = ctx + [{"role": "assistant", "content": "B"}]
    assert from_ultrafeedback(row, "w").prompt == ctx
    text = {"prompt": "Q?", "chosen": "good answer", "rejected": "bad answer", "score_chosen": 1}
    rec = from_ultrafeedback(text, "w")
    assert (rec.prompt, rec.chosen, rec.rejected) == ("Q?", "good answer", "bad answer")


def test_ultrafeedback_errors():
    row = uf_row()
    row["chosen"] = row["chosen"][:1]
    with pytest.raises(DataValidationError, match="uf row 3: field 'chosen' must end with an assistant turn"):
        from_ultrafeedback(row, "uf row 3")
    row = uf_row()
    row["rejected"] = [{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]
    with pytest.raises(DataValidationError, match="different conversations"):
        from_ultrafeedback(row, "w")


def test_from_pairs_roundtrip_and_csv_text():
    rec = PairRecord(
        prompt=[{"role": "user", "content": "q"}],
        chosen="a",
        rejected="b",
        safe_chosen=0.0,
        safe_rejected=1.0,
        source="redteam",
        kind="safety",
        metadata={"model": "m"},
    )
    back = from_pairs(rec.to_dict(), "w")
    assert back == rec
    csv_row = {
        "prompt": json.dumps([{"role": "user", "content": "q"}]),
        "chosen": "a",
        "rejected": "b",
        "safe_chosen": "False",
        "safe_rejected": "1",
        "metadata": '{"model": "m"}',
        "extra": "x",
    }
    back = from_pairs(csv_row, "w")
    assert back.prompt == [{"role": "user", "content": "q"}] and back.safe_chosen == 0.0
    assert back.metadata == {"model": "m", "extra": "x"}


def test_from_generic_column_map():
    row = {"question": "q?", "good": "yes sure", "bad": "no", "good_safe": 0, "bad_safe": True, "id": 7}
    cmap = {
        "prompt": "question",
        "chosen": "good",
        "rejected": "bad",
        "safe_chosen": "good_safe",
        "safe_rejected": "bad_safe",
    }
    rec = from_generic(row, "w", cmap)
    assert (rec.prompt, rec.chosen, rec.rejected, rec.safe_chosen, rec.safe_rejected) == (
        "q?",
        "yes sure",
        "no",
        0.0,
        1.0,
    )
    assert rec.kind == "safety" and rec.metadata == {"id": 7}
    # unnamed safety columns default to 1.0 and the pair is a helpfulness pair
    rec = from_generic(row, "w", {"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (rec.safe_chosen, rec.safe_rejected, rec.kind) == (1.0, 1.0, "helpful")
    # a named but missing safety column is an error
    with pytest.raises(DataValidationError, match="w: missing field 'nope'"):
        from_generic(row, "w", {**cmap, "safe_rejected": "nope"})
    with pytest.raises(ValueError, match="unknown field"):
        from_generic(row, "w", {"question": "prompt"})


# ------------------------------------------------------------------------------------ load_pairs
def test_load_pku_jsonl_v0_and_parquet_v1_auto(tmp_path):
    v0 = write_jsonl(tmp_path / "pku.jsonl", [pku_v0_row(i) for i in range(5)])
    recs = load_pairs(v0)
    assert len(recs) == 5 and all(r.source == "pku_saferlhf" for r in recs)
    assert recs[2].metadata["origin"] == "pku.jsonl row 2" and recs[2].prompt == "How do I pick lock number 2?"
    v1 = write_parquet(tmp_path / "pku_v1.parquet", [pku_v1_row(i) for i in range(4)])
    recs = load_pairs(v1)
    assert len(recs) == 4 and recs[0].metadata["chosen_harm_category"]["Cybercrime"] is True
    assert recs[0].metadata["chosen_severity_level"] == 2


def test_load_pku_csv_parses_text_labels(tmp_path):
    path = write_csv(
        tmp_path / "pku.csv", [pku_v1_row(i, better=i % 2, safer=0, safe0=True, safe1=False) for i in range(4)]
    )
    _, report = load_pairs_with_report(path)
    assert report.schema == "pku_saferlhf"
    recs = load_pairs(path)
    assert [r.safe_chosen for r in recs] == [1.0, 0.0, 1.0, 0.0]
    assert [r.metadata["safer"] for r in recs] == ["chosen", "rejected", "chosen", "rejected"]
    assert recs[0].metadata["chosen_harm_category"] == {"Animal Abuse": False, "Cybercrime": True, "Violence": False}


def test_load_ultrafeedback_jsonl_and_json(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", [uf_row(i) for i in range(3)])
    recs = load_pairs(path)
    assert [r.kind for r in recs] == ["helpful"] * 3 and recs[1].chosen == "Number 1 / soft"
    js = tmp_path / "uf.json"
    js.write_text(json.dumps([uf_row(i) for i in range(2)]))
    assert len(load_pairs(str(js), schema="ultrafeedback")) == 2
    assert load_pairs(path, kind="safety")[0].kind == "safety"


def test_load_pairs_and_generic(tmp_path):
    rows = [
        PairRecord(
            prompt=f"q{i}", chosen=f"a{i}", rejected=f"b{i}", safe_chosen=0, safe_rejected=1, source="redteam"
        ).to_dict()
        for i in range(3)
    ]
    recs = load_pairs(write_jsonl(tmp_path / "rt.jsonl", rows))
    assert [r.chosen for r in recs] == ["a0", "a1", "a2"] and recs[0].safe_rejected == 1.0
    gen = write_csv(tmp_path / "g.csv", [{"question": "q", "good": "g", "bad": "b"}])
    recs = load_pairs(gen, column_map={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert recs[0].chosen == "g" and recs[0].kind == "helpful"


def test_auto_detect_failure_lists_columns(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        DataValidationError, match=r"odd\.jsonl: cannot detect the schema from columns \[answer, question\]"
    ):
        load_pairs(path)
    assert detect_schema(["prompt", "chosen", "rejected"]) == "pairs"
    assert detect_schema(["prompt", "chosen", "rejected", "score_chosen"]) == "ultrafeedback"


def test_missing_file_unknown_schema_and_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_pairs(str(tmp_path / "nope.jsonl"))
    path = write_jsonl(tmp_path / "pku.jsonl", [pku_v0_row()])
    with pytest.raises(ValueError, match="valid schemas: auto, pku_saferlhf, ultrafeedback, pairs, generic"):
        load_pairs(path, schema="beaver")
    with pytest.raises(ValueError, match="on_error"):
        load_pairs(path, on_error="skip")
    with pytest.raises(ValueError, match="kind"):
        load_pairs(path, kind="harmless")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"is_response_0_safe": 1.5}, "is_response_0_safe"),
        ({"is_response_1_safe": "yes"}, "is_response_1_safe"),
        ({"response_1": "  "}, "chosen"),  # better_response_id=1 -> chosen is response_1
        ({"response_0": "Use a tension wrench on lock 1."}, "chosen' and 'rejected"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 42}, "prompt"),
    ],
)
def test_validation_errors_name_file_row_field(tmp_path, change, field):
    rows = [pku_v0_row(i) for i in range(3)]
    rows[1].update(change)
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with pytest.raises(DataValidationError, match=rf"pku\.jsonl row 1: fields? '{field}'"):
        load_pairs(path)


def test_missing_column_in_file(tmp_path):
    rows = [pku_v0_row(i) for i in range(3)]
    del rows[2]["response_1"]
    with pytest.raises(DataValidationError, match=r"pku\.jsonl row 2: missing field 'response_1'"):
        load_pairs(write_jsonl(tmp_path / "pku.jsonl", rows), schema="pku_saferlhf")


def test_drop_counts_per_reason(tmp_path, caplog):
    rows = [pku_v0_row(i) for i in range(10)]
    rows[1]["is_response_0_safe"] = 1.5
    rows[4]["is_response_0_safe"] = 7
    rows[6]["response_1"] = ""
    rows[8]["response_0"] = rows[8]["response_1"]
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="bfpo.data.adapters"):
        recs, report = load_pairs_with_report(path, on_error="drop")
    assert isinstance(report, LoadReport)
    assert len(recs) == 6 and report.n_rows == 10 and report.n_loaded == 6 and report.n_dropped == 4
    assert report.dropped == {
        "field 'is_response_0_safe' must be in [0, 1]": 2,
        "field 'chosen' is empty": 1,
        "fields 'chosen' and 'rejected' are identical": 1,
    }
    assert "dropped 4 invalid row(s)" in caplog.text
    assert [r.metadata["origin"] for r in recs] == [f"pku.jsonl row {i}" for i in (0, 2, 3, 5, 7, 9)]
    assert len(load_pairs(path, on_error="drop")) == 6


def test_limit_counts_valid_rows_and_shuffle_is_seeded(tmp_path):
    rows = [pku_v0_row(i) for i in range(20)]
    rows[0]["prompt"] = ""
    path = write_jsonl(tmp_path / "pku.jsonl", rows)
    recs = load_pairs(path, limit=3, on_error="drop")
    assert [r.metadata["origin"] for r in recs] == ["pku.jsonl row 1", "pku.jsonl row 2", "pku.jsonl row 3"]
    a = [r.metadata["origin"] for r in load_pairs(path, limit=5, shuffle=True, seed=1, on_error="drop")]
    b = [r.metadata["origin"] for r in load_pairs(path, limit=5, shuffle=True, seed=1, on_error="drop")]
    c = [r.metadata["origin"] for r in load_pairs(path, limit=5, shuffle=True, seed=2, on_error="drop")]
    assert a == b and a != c and len(set(a)) == 5


def test_bad_jsonl_line_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(pku_v0_row()) + "\n{not json\n")
    with pytest.raises(DataValidationError, match=r"x\.jsonl line 2: not valid JSON"):
        load_pairs(str(path))


def test_dataset_folder_goes_through_datasets_load_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "pku_repo"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [pku_v1_row(i) for i in range(3)])
    write_jsonl(folder / "test.jsonl", [pku_v1_row(i) for i in range(2)])
    with pytest.raises(ValueError, match="splits .*test.*pass split="):
        load_pairs(str(folder))
    recs = load_pairs(str(folder), split="train")
    assert len(recs) == 3 and recs[1].metadata["origin"] == f"{folder}[train] row 1"
    assert recs[0].metadata["chosen_harm_category"]["Cybercrime"] is True
