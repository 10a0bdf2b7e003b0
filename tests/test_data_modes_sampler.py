"""Training modes of Table 1 / Table 4, SFT data, and the buffered sampler of Algorithm 1."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from bfpo.data.modes import MODES, TrainingSet, build_training_set, case_of, sft_examples
from bfpo.data.records import PairRecord
from bfpo.data.sampler import BufferedSampler


def safety_pairs() -> list[PairRecord]:
    """Four PKU-like pairs covering the four Figure-3 cases (chosen = more helpful)."""
    return [
        PairRecord("p0", "helpful safe 0", "refuse 0", 1.0, 0.0, "pku", "safety", {"safer": "chosen"}),
        PairRecord("p1", "helpful safe 1", "also safe 1", 1.0, 1.0, "pku", "safety", {"safer": "rejected"}),
        PairRecord("p2", "harmful 2", "worse 2", 0.0, 0.0, "pku", "safety", {}),
        PairRecord("p3", "harmful but helpful 3", "refusal 3", 0.0, 1.0, "pku", "safety", {}),
    ]


def helpful_pairs(n: int = 3) -> list[PairRecord]:
    return [
        PairRecord([{"role": "user", "content": f"h{i}"}], f"good {i}", f"meh {i}", 1.0, 1.0, "uf", "helpful")
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------ modes
def test_bfpo_keeps_helpful_winner_and_is_buffered():
    ts = build_training_set(safety_pairs(), helpful_pairs(), "bfpo")
    assert ts.buffered and ts.mode == "bfpo" and len(ts) == 7
    assert [r.chosen for r in ts.records[:4]] == [r.chosen for r in safety_pairs()]
    assert ts.counts() == {
        "total": 7,
        "safety": 4,
        "helpful": 3,
        "safe_unsafe": 1,
        "safe_safe": 4,
        "unsafe_unsafe": 1,
        "unsafe_safe": 1,
    }
    assert ts.is_safety() == [True] * 4 + [False] * 3


def test_bfpo_no_buffer_same_records_unbuffered():
    a = build_training_set(safety_pairs(), helpful_pairs(), "bfpo")
    b = build_training_set(safety_pairs(), helpful_pairs(), "bfpo_no_buffer")
    assert not b.buffered and a.records == b.records


def test_dpo_h_helpful_only():
    ts = build_training_set(safety_pairs(), helpful_pairs(), "dpo_h")
    assert not ts.buffered and ts.counts()["safety"] == 0 and ts.counts()["helpful"] == 3


def test_dpo_s_swaps_to_safer_response():
    src = safety_pairs()
    ts = build_training_set(src, [], "dpo_s")
    got = [(r.chosen, r.rejected, r.safe_chosen, r.safe_rejected, r.metadata["swapped"]) for r in ts.records]
    assert got == [
        ("helpful safe 0", "refuse 0", 1.0, 0.0, False),  # metadata says chosen is safer
        ("also safe 1", "helpful safe 1", 1.0, 1.0, True),  # metadata says rejected is safer
        ("harmful 2", "worse 2", 0.0, 0.0, False),  # no metadata, tie keeps order
        ("refusal 3", "harmful but helpful 3", 1.0, 0.0, True),  # no metadata, labels decide
    ]
    assert all(r.metadata["safer"] == "chosen" for r in ts.records)
    assert ts.counts()["unsafe_safe"] == 0 and ts.counts()["safe_unsafe"] == 2
    # inputs untouched
    assert src[3].chosen == "harmful but helpful 3" and "swapped" not in src[3].metadata


def test_mix_shuffles_both_sources_with_seed():
    s, h = safety_pairs(), helpful_pairs(6)
    a = build_training_set(s, h, "mix", seed=0)
    b = build_training_set(s, h, "mix", seed=0)
    c = build_training_set(s, h, "mix", seed=1)
    assert not a.buffered and len(a) == 10
    assert [r.chosen for r in a.records] == [r.chosen for r in b.records]
    assert [r.chosen for r in a.records] != [r.chosen for r in c.records]
    kinds = "".join(r.kind[0] for r in a.records)
    assert kinds != "s" * 4 + "h" * 6  # interleaved, not concatenated
    chosen = {r.chosen for r in a.records}
    assert "refusal 3" in chosen and "also safe 1" in chosen and "good 5" in chosen  # safer / more helpful win


@pytest.mark.parametrize(
    "mode, s, h, missing",
    [
        ("bfpo", [], helpful_pairs(), "safety"),
        ("bfpo", safety_pairs(), [], "helpful"),
        ("bfpo_no_buffer", [], helpful_pairs(), "safety"),
        ("dpo_h", safety_pairs(), [], "helpful"),
        ("dpo_s", [], helpful_pairs(), "safety"),
        ("mix", safety_pairs(), [], "helpful"),
    ],
)
def test_mode_needs_nonempty_set(mode, s, h, missing):
    with pytest.raises(ValueError, match=f"mode '{mode}' needs {missing} pairs"):
        build_training_set(s, h, mode)


def test_bfpo_no_buffer_runs_on_safety_pairs_alone():
    """Section 4.3 / Appendix C.3: the red-team run trains BFPO on the red-team pairs only, unbuffered."""
    t = build_training_set(safety_pairs(), [], "bfpo_no_buffer")
    assert not t.buffered and len(t) == len(safety_pairs()) and all(r.kind == "safety" for r in t.records)


def test_unknown_mode_lists_valid():
    with pytest.raises(ValueError, match="valid modes: bfpo, bfpo_no_buffer, dpo_h, dpo_s, mix"):
        build_training_set(safety_pairs(), helpful_pairs(), "ipo")
    assert MODES == ("bfpo", "bfpo_no_buffer", "dpo_h", "dpo_s", "mix")


def test_case_of_threshold():
    rec = PairRecord("p", "a", "b", 0.5, 0.49)
    assert case_of(rec) == "safe_unsafe"
    assert TrainingSet([rec], False, "dpo_h").counts()["safe_unsafe"] == 1


def test_sft_examples_helpful_and_safe_safer_responses():
    ex = sft_examples(safety_pairs(), helpful_pairs(2))
    completions = [e["completion"][0]["content"] for e in ex]
    # p2: both unsafe -> skipped; p1: the safer (rejected) one; p3: the refusal
    assert completions == ["good 0", "good 1", "helpful safe 0", "also safe 1", "refusal 3"]
    assert ex[0]["prompt"] == [{"role": "user", "content": "h0"}]
    assert ex[2]["prompt"] == [{"role": "user", "content": "p0"}]
    assert all(e["completion"][0]["role"] == "assistant" and len(e["completion"]) == 1 for e in ex)


# ------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("n_s, n_h, bs", [(37, 101, 8), (100, 9, 4), (5, 5, 2), (64, 64, 16)])
def test_every_chunk_balanced(n_s, n_h, bs):
    flags = [True] * n_s + [False] * n_h
    sampler = BufferedSampler(flags, bs, seed=3)
    idx = list(sampler)
    assert len(idx) == len(sampler) == sampler.num_batches * bs
    assert sampler.num_batches == -(-max(n_s, n_h) // (bs // 2))
    for k in range(0, len(idx), bs):
        chunk = idx[k : k + bs]
        assert sum(flags[i] for i in chunk) == bs // 2
    # the larger source is visited once per epoch, the smaller cycles evenly
    big = [i for i in idx if flags[i] == (n_s >= n_h)]
    assert set(big) == {i for i, f in enumerate(flags) if f == (n_s >= n_h)}
    small_counts = Counter(i for i in idx if flags[i] != (n_s >= n_h))
    assert max(small_counts.values()) - min(small_counts.values()) <= 1


def test_chunks_are_shuffled_inside():
    flags = [True] * 50 + [False] * 50
    idx = list(BufferedSampler(flags, 10, seed=0))
    patterns = [tuple(flags[i] for i in idx[k : k + 10]) for k in range(0, 100, 10)]
    unshuffled = (True,) * 5 + (False,) * 5
    assert sum(p == unshuffled for p in patterns) < 3 and len(set(patterns)) >= 5


def test_seed_and_epoch_determinism():
    flags = [i % 3 == 0 for i in range(60)]
    a = BufferedSampler(flags, 6, seed=1)
    b = BufferedSampler(flags, 6, seed=1)
    assert list(a) == list(b) and list(a) == list(a)
    e0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != e0
    a.set_epoch(0)
    assert list(a) == e0
    assert list(BufferedSampler(flags, 6, seed=2)) != e0


def test_num_batches_override_and_errors():
    flags = [True] * 3 + [False] * 3
    s = BufferedSampler(flags, 4, num_batches=10)
    assert len(s) == 40 and len(list(s)) == 40
    with pytest.raises(ValueError, match="batch_size must be even"):
        BufferedSampler(flags, 5)
    with pytest.raises(ValueError, match="helpfulness source is empty"):
        BufferedSampler([True] * 4, 2)
    with pytest.raises(ValueError, match="safety source is empty"):
        BufferedSampler([False] * 4, 2)


def test_dataloader_batches_balanced_and_rank_shards_balanced():
    flags = [i % 4 == 0 for i in range(80)]
    sampler = BufferedSampler(flags, 4, seed=0)
    data = torch.tensor(flags, dtype=torch.long)
    batches = list(DataLoader(data, batch_size=4, sampler=sampler))
    assert all(int(b.sum()) == 2 for b in batches)
    # two ranks taking whole batches round-robin (accelerate's BatchSamplerShard) stay balanced
    for rank in (0, 1):
        assert all(int(b.sum()) == 2 for b in batches[rank::2])
