"""Class masses of a policy on held-out prompts: exactly (scoring exemplars) and by sampling.

Exact: for a prompt x and the exemplars Y_k of each class k valid for its kind, the class score is
``logsumexp_{y in Y_k} log pi(y|x)`` (summed response log-probs incl. EOS, as in Eq. 5) and the class
masses are the softmax of the scores over the classes; masses are averaged over prompts. With the same
number of exemplars per class this is the policy's probability of each class restricted to the
candidate set, normalised.

Sampled: N responses per prompt at temperature 1 (no top-k / top-p), classified with
:func:`bfpo.experiments.world.classifier.classify`; the share of each label, including ``other``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from bfpo.data.records import PairRecord
from bfpo.data.tokenize import tokenize_pair
from bfpo.experiments.world import generator as g
from bfpo.experiments.world.classifier import LABELS, classify


def encode(prompt: str, response: str, tokenizer, max_length: int = 256) -> Dict[str, List[int]]:
    """Prompt and response ids exactly as the trainer tokenises a pair (chat template, BOS, EOS)."""
    ex = tokenize_pair(PairRecord(prompt=prompt, chosen=response, rejected=response), tokenizer, max_length)
    return {"prompt_ids": ex["prompt_ids"], "response_ids": ex["chosen_ids"]}


@torch.no_grad()
def sequence_logps(model, items: Sequence[Dict[str, List[int]]], pad_id: int, batch_size: int = 128) -> torch.Tensor:
    """Summed log pi(response | prompt) of each item, float32 ``[len(items)]`` (full-logit forward)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        seqs = [it["prompt_ids"] + it["response_ids"] for it in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        resp = torch.zeros_like(ids)
        for i, (s, it) in enumerate(zip(seqs, chunk)):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            resp[i, len(it["prompt_ids"]) : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        out.append((lp * resp[:, 1:].to(device)).sum(-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def class_masses_from_logps(logps: torch.Tensor) -> torch.Tensor:
    """Per-prompt class masses from exemplar log-probs of shape ``[prompts, classes, exemplars]``:
    softmax over classes of the logsumexp over each class's exemplars; shape ``[prompts, classes]``."""
    if logps.dim() != 3:
        raise ValueError(f"expected [prompts, classes, exemplars] log-probs, got shape {tuple(logps.shape)}")
    return torch.softmax(torch.logsumexp(logps.double(), dim=-1), dim=-1).float()


def exact_masses(
    model, tokenizer, prompts: Sequence[g.Prompt], exemplars: Sequence[Dict[str, List[str]]], max_length: int = 256
) -> Dict[str, float]:
    """Mean class masses over ``prompts`` (all of one kind) from their exemplars (class -> texts)."""
    if not prompts:
        raise ValueError("exact_masses needs at least one prompt")
    kind = prompts[0].kind
    classes = g.KIND_CLASSES[kind]
    k = len(exemplars[0][classes[0]])
    items = []
    for p, ex in zip(prompts, exemplars):
        if p.kind != kind:
            raise ValueError(f"prompts of mixed kinds: {kind!r} and {p.kind!r}")
        for c in classes:
            if len(ex[c]) != k:
                raise ValueError(f"every class needs {k} exemplars; class {c!r} of {p.text!r} has {len(ex[c])}")
            items.extend(encode(p.text, y, tokenizer, max_length) for y in ex[c])
    logps = sequence_logps(model, items, tokenizer.pad_token_id).view(len(prompts), len(classes), k)
    mass = class_masses_from_logps(logps).mean(0)
    return {c: float(m) for c, m in zip(classes, mass)}


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int,
    seed: int,
    max_new_tokens: int = 64,
    batch_size: int = 256,
    max_length: int = 256,
) -> List[List[str]]:
    """``n`` sampled responses per prompt (temperature 1, full distribution), decoded without specials."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    flat = [encode(p, "x", tokenizer, max_length)["prompt_ids"] for p in prompts for _ in range(n)]
    texts: List[str] = []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, s in enumerate(chunk):  # left padding
            ids[i, width - len(s) :] = torch.tensor(s)
            att[i, width - len(s) :] = 1
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    model.train(was_training)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def sampled_masses(
    model, tokenizer, prompts: Sequence[g.Prompt], n: int, seed: int, max_new_tokens: int = 64
) -> Dict[str, float]:
    """Share of each label (classes of the prompts' kind plus any other label seen, incl. 'other')."""
    samples = sample_responses(model, tokenizer, [p.text for p in prompts], n, seed, max_new_tokens)
    counts = {c: 0 for c in g.KIND_CLASSES[prompts[0].kind]}
    counts["other"] = 0
    total = 0
    for group in samples:
        for text in group:
            label = classify(text)
            counts[label] = counts.get(label, 0) + 1
            total += 1
    return {c: counts[c] / total for c in LABELS if c in counts}
