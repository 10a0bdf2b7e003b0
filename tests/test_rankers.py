import pytest
import torch

from bfpo.redteam.rankers import (
    CAND1_PREFIX,
    CAND2_PREFIX,
    SOURCE_PREFIX,
    PairRMRanker,
    RewardModelRanker,
    RuleRanker,
    _pairrm_class,
    get_ranker,
    informativeness,
)
from bfpo.testing import tiny_tokenizer


def test_rule_ranker_order():
    r = RuleRanker()
    refusal = "I'm sorry, I cannot help with that."
    short = "Mix flour and water."
    long = "Mix flour, water, salt and yeast; knead ten minutes, let it rise, then bake at 220 C."
    assert r.rank("q", refusal, short) == 1
    assert r.rank("q", short, refusal) == 0
    assert r.rank("q", short, long) == 1
    assert r.rank("q", "bake bake bake bake bake bake", "bake bread now") == 1  # repetition is not content
    assert r.rank("q", "same", "same") == 0
    assert informativeness("The the THE cat") == 2
    assert r.rank_pairs(["q", "q"], [short, long], [long, short]) == [1, 0]
    with pytest.raises(ValueError, match="2 prompts, 1 a-responses"):
        r.rank_pairs(["q", "q"], [short], [long, short])


def test_get_ranker():
    assert isinstance(get_ranker("rule"), RuleRanker)
    with pytest.raises(ValueError, match="unknown ranker 'gpt'"):
        get_ranker("gpt")
    with pytest.raises(ValueError, match="needs a model"):
        get_ranker("reward")


def test_reward_model_ranker_prefers_higher_score():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    r = RewardModelRanker(model=LlamaForSequenceClassification(cfg).eval(), tokenizer=tok, batch_size=2)
    prompts, a, b = ["q"] * 3, ["bread", "water", "salt"], ["Paris", "hello there", "yeast"]
    sa, sb = r.score(prompts, a), r.score(prompts, b)
    assert r.rank_pairs(prompts, a, b) == [0 if x >= y else 1 for x, y in zip(sa, sb)]
    assert r.rank("q", "bread", "Paris") == (0 if sa[0] >= sb[0] else 1)


@pytest.fixture(scope="module")
def pairrm_dir(tmp_path_factory):
    from transformers import DebertaV2Config

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [SOURCE_PREFIX, CAND1_PREFIX, CAND2_PREFIX]})
    cfg = DebertaV2Config(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        n_tasks=2,
        drop_out=0.0,
    )
    torch.manual_seed(0)
    model = _pairrm_class()(cfg)
    path = tmp_path_factory.mktemp("pairrm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model


def test_pairrm_loads_checkpoint_and_formats_input(pairrm_dir):
    path, saved = pairrm_dir
    r = PairRMRanker(path, device="cpu", source_max_length=16, candidate_max_length=8)
    assert set(saved.state_dict()) == set(r.model.state_dict())
    assert any(k.startswith("head_layer.4.") for k in saved.state_dict())
    for k, v in saved.state_dict().items():
        assert torch.equal(v, r.model.state_dict()[k]), k
    ids, mask = r.encode(["a long prompt " * 20], ["x"], ["y " * 40])
    row = ids[0].tolist()
    cfg = r.model.config
    assert row.count(cfg.source_prefix_id) == 1 and row.count(cfg.cand1_prefix_id) == 1
    assert row.index(cfg.source_prefix_id) < row.index(cfg.cand1_prefix_id) < row.index(cfg.cand2_prefix_id)
    assert int(mask.sum()) <= 16 + 2 * 8


def test_pairrm_both_orders_is_antisymmetric(pairrm_dir):
    path, _ = pairrm_dir
    r = PairRMRanker(path, device="cpu", batch_size=2)
    prompts = ["How do I bake bread?"] * 3
    a = ["Mix flour and water.", "Paris.", "I cannot help."]
    b = ["Sorry, I cannot.", "The capital is Paris, in France.", "Here is how, step by step."]
    fwd, bwd = r.rank_pairs(prompts, a, b), r.rank_pairs(prompts, b, a)
    assert [x + y for x, y in zip(fwd, bwd)] == [1, 1, 1]
    one_order = PairRMRanker(path, device="cpu", both_orders=False, seed=3)
    assert all(x in (0, 1) for x in one_order.rank_pairs(prompts, a, b))


def test_pairrm_rejects_non_pairrm_tokenizer(tmp_path):
    from transformers import DebertaV2Config

    tok = tiny_tokenizer()
    cfg = DebertaV2Config(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    _pairrm_class()(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no <\\|source\\|> token"):
        PairRMRanker(str(tmp_path), device="cpu")
