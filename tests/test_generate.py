import io

import pytest
import torch

from bfpo.cli import main as cli_main
from bfpo.models.chat import chat_loop
from bfpo.models.generate import format_prompt, generate, generate_from_texts, load_for_generation
from bfpo.testing import save_tiny_model


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("tiny"))
    model, tok = load_for_generation(path, device="cpu")
    return path, model, tok


def test_load_model_sets_padding(loaded):
    _, model, tok = loaded
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.config.pad_token_id == tok.pad_token_id and not model.training


def test_generate_shapes_and_determinism(loaded):
    _, model, tok = loaded
    prompts = ["How do I bake bread?", [{"role": "user", "content": "hi"}], "The capital of France?"]
    a = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, progress=False)
    assert len(a) == 3 and all(len(x) == 1 and isinstance(x[0], str) for x in a)
    # batching and left padding do not change greedy answers
    singles = [generate(model, tok, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert a == singles
    s1 = generate(model, tok, prompts, max_new_tokens=6, num_return_sequences=3, do_sample=True, seed=1, progress=False)
    s2 = generate(model, tok, prompts, max_new_tokens=6, num_return_sequences=3, do_sample=True, seed=1, progress=False)
    assert s1 == s2 and all(len(x) == 3 for x in s1)
    with pytest.raises(ValueError, match="needs do_sample=True"):
        generate(model, tok, prompts, num_return_sequences=2)


def test_generate_bf16_and_system_prompt(loaded):
    _, model, tok = loaded
    out = generate(model, tok, ["hi"], max_new_tokens=4, bf16=True, system_prompt="Be safe.", progress=False)
    assert len(out) == 1 and model.dtype == torch.float32
    text = format_prompt("hi", tok, system_prompt="Be safe.")
    assert text.startswith("<|system|>\nBe safe.<|end|>") and text.endswith("<|assistant|>\n")
    assert generate_from_texts(model, tok, [], max_new_tokens=2) == []


def test_chat_loop_reads_stdin(loaded):
    _, model, tok = loaded
    out = io.StringIO()
    history = chat_loop(
        model, tok, stdin=io.StringIO("hello\n\n/reset\nbake bread\nexit\nnever read\n"), stdout=out, max_new_tokens=4
    )
    text = out.getvalue()
    assert text.count("bot> ") == 2 and "(conversation cleared)" in text
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == "bake bread"
    out = io.StringIO()
    history = chat_loop(model, tok, stdin=io.StringIO("a\nb\n"), stdout=out, max_new_tokens=3)  # EOF ends it
    assert [m["content"] for m in history if m["role"] == "user"] == ["a", "b"]


def test_chat_cli(loaded, monkeypatch, capsys):
    path, _, _ = loaded
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nquit\n"))
    cli_main(["chat", "--model_name_or_path", path, "--max_new_tokens", "3"])
    assert capsys.readouterr().out.count("bot> ") == 1


def test_vllm_backend_needs_vllm_and_bad_backend_fails(loaded, monkeypatch):
    import sys

    path, _, _ = loaded
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(ImportError, match="backend='vllm' needs the vllm package"):
        load_for_generation(path, backend="vllm")
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        load_for_generation(path, backend="tf")


def test_native_bf16_reads_the_device(monkeypatch):
    import torch

    from bfpo.models.generate import native_bf16

    assert native_bf16("mps") is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert native_bf16("cpu") is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert native_bf16("cpu") is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_bf16("cuda:0") is False
