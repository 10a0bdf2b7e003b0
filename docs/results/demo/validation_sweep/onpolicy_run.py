"""Exploration: helpfulness pairs whose rejected side is the SFT model's own refusal of a benign prompt."""

import argparse, json, os, random, time
import torch

torch.set_num_threads(2)
from pathlib import Path
from bfpo.data.records import PairRecord
from bfpo.eval import promptsets as P
from bfpo.eval.judges import get_judge
from bfpo.eval.selection import SelectBySafety
from bfpo.experiments import demo
from bfpo.files import read_jsonl
from bfpo.models.generate import generate, load_for_generation, load_generation_tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--tag", required=True)
ap.add_argument("--json", default="{}")
ap.add_argument("--onpolicy", type=int, default=1)
ap.add_argument("--src", default="/tmp/cmp0")
ap.add_argument("--k", type=int, default=2)
ap.add_argument("--kh", type=int, default=2)
ap.add_argument("--nsafe_op", type=int, default=64)
a = ap.parse_args()
T0 = time.time()
kw = json.loads(a.json)
s = demo.DemoSettings(**kw)
src = Path(a.src)
sft = src / "work" / "sft"
base = src / "base"
safety = [PairRecord.from_dict(r) for r in read_jsonl(src / "pairs/safety.jsonl")]
helpful = [PairRecord.from_dict(r) for r in read_jsonl(src / "pairs/helpful.jsonl")]
val = demo.read_validation(src / "validation_prompts.jsonl")
used = {r.prompt for r in helpful} | {r["prompt"] for r in val["val_benign"]}
extra = [r["prompt"] for r in P.load_suite("bfpo-train") if r["kind"] == "benign" and r["prompt"] not in used]
vb = [r["prompt"] for r in val["val_benign"]] + extra
vh = [r["prompt"] for r in val["val_harmful"]]
judge = get_judge("refusal")
out = Path(f"/tmp/s6/{a.tag}")
out.mkdir(parents=True, exist_ok=True)
res = {"tag": a.tag, "json": kw, "onpolicy": a.onpolicy, "n_val": [len(vh), len(vb)]}
if a.onpolicy:
    cache = Path(f"/tmp/s6/sft_samples_k{a.k}.json")
    if cache.exists():
        samples = json.loads(cache.read_text())
    else:
        lm, tok = load_for_generation(str(sft))
        prompts = [r.prompt for r in helpful]
        gen = generate(
            lm,
            tok,
            prompts,
            max_new_tokens=48,
            num_return_sequences=a.k,
            do_sample=True,
            temperature=0.8,
            top_p=0.95,
            batch_size=8,
            seed=0,
            bf16=True,
            progress=False,
        )
        samples = [[p, g] for p, g in zip(prompts, gen)]
        cache.write_text(json.dumps(samples))
        del lm
    by_prompt = {r.prompt: r for r in helpful}
    onp = []
    for p, gs in samples:
        vs = judge.judge([p] * len(gs), gs, kinds=["benign"] * len(gs))
        for g, v in zip(gs, vs):
            if v.refusal and g.strip():
                h = by_prompt[p]
                onp.append(
                    PairRecord(
                        prompt=p,
                        chosen=h.chosen,
                        rejected=g.strip(),
                        safe_chosen=1.0,
                        safe_rejected=1.0,
                        source="demo:answer-vs-own-refusal",
                        kind="helpful",
                        metadata=h.metadata,
                    )
                )
    res["onpolicy_pairs"] = len(onp)
    print("on-policy refusal pairs", len(onp), flush=True)
    rest = [r for r in helpful]
    random.Random(0).shuffle(rest)
    if a.onpolicy >= 2:  # on-policy pairs only, topped up with canned to the same size
        helpful = onp + rest[: max(0, 64 - len(onp))]
    else:
        helpful = onp + rest
if a.onpolicy in (3, 6):  # the safety side on-policy too: the SFT model's own answers to the harmful train prompts
    cache = Path(f"/tmp/s6/sft_harm_k{a.kh}.json")
    if cache.exists():
        hs = json.loads(cache.read_text())
    else:
        lm, tk = load_for_generation(str(sft))
        hp = list(dict.fromkeys(r.prompt for r in safety))
        gen = generate(
            lm,
            tk,
            hp,
            max_new_tokens=48,
            num_return_sequences=a.kh,
            do_sample=True,
            temperature=0.8,
            top_p=0.95,
            batch_size=8,
            seed=0,
            bf16=True,
            progress=False,
        )
        hs = [[p, g] for p, g in zip(hp, gen)]
        cache.write_text(json.dumps(hs))
        del lm
    own_ref, own_unsafe = {}, {}
    for p, gs in hs:
        vs = judge.judge([p] * len(gs), gs, kinds=["harmful"] * len(gs))
        for g, v in zip(gs, vs):
            if not g.strip():
                continue
            if v.refusal:
                own_ref.setdefault(p, g.strip())
            else:
                own_unsafe.setdefault(p, []).append(g.strip())
    meta = {r.prompt: r.metadata for r in safety}
    hand = [r.rejected for r in safety]
    hand_for = {r.prompt: r.rejected for r in safety}
    onp_s = []
    for p, us in own_unsafe.items():
        for u in us:
            onp_s.append(
                PairRecord(
                    prompt=p,
                    chosen=u,
                    rejected=(hand_for.get(p) or hand[len(onp_s) % len(hand)])
                    if a.onpolicy == 6
                    else own_ref.get(p, hand[len(onp_s) % len(hand)]),
                    safe_chosen=0.0,
                    safe_rejected=1.0,
                    source="demo:own-unsafe-vs-own-refusal",
                    kind="safety",
                    metadata=meta[p],
                )
            )
    rest = []
    for r in safety:
        if r.prompt in own_ref and a.onpolicy == 3:
            r = PairRecord(
                prompt=r.prompt,
                chosen=r.chosen,
                rejected=own_ref[r.prompt],
                safe_chosen=r.safe_chosen,
                safe_rejected=r.safe_rejected,
                source=r.source,
                kind="safety",
                metadata=r.metadata,
            )
        rest.append(r)
    random.Random(1).shuffle(rest)
    res["onpolicy_safety"] = len(onp_s)
    res["own_refusals"] = len(own_ref)
    print("on-policy safety pairs", len(onp_s), "prompts with an own refusal", len(own_ref), "of", len(hs), flush=True)
    random.Random(2).shuffle(onp_s)
    onp_s = onp_s[: a.nsafe_op]
    safety = onp_s + rest[: max(0, 64 - len(onp_s))]
tok = load_generation_tokenizer(str(base))
sel = SelectBySafety(tok, vh, vb, every=s.select_every, judge=judge, max_new_tokens=48, batch_size=16, bf16=True)
t = time.time()
# put on-policy pairs in the used sample: used_pairs samples randomly, so oversample by duplication-free order
info = demo.run_preference(str(sft), safety, helpful, "bfpo", out / "bfpo", s, str(out / "refcache"), callbacks=[sel])
res["bfpo_s"] = round(time.time() - t)
res["points"] = [p.__dict__ if hasattr(p, "__dict__") else p for p in sel.summary()["points"]]
res["log"] = [
    {k: round(v, 3) for k, v in r.items() if k.startswith("margins/") or k in ("step", "loss")} for r in info["log"]
]
res["counts"] = info["counts"]
res["total_s"] = round(time.time() - T0)
for p in res["points"]:
    print(p, flush=True)
open("/tmp/s6/runs.jsonl", "a").write(json.dumps(res) + "\n")
