"""Validation-only exploration of the demo SFT stage with self-sampled user prompts (session 7; never reads
the evaluation sets' answers). Usage: python selfprompt_sft_run.py "v1:n_harm_prompts=128,n_self=128" ...
Each spec is TAG:settings; n_* choose the cached pairs, the rest are DemoSettings fields."""

import json, sys, time, random, os
from pathlib import Path
from dataclasses import replace
import torch
from bfpo.experiments import demo as D
from bfpo.models.smollm import smollm2_dir
from bfpo.models.generate import load_for_generation, generate
from bfpo.models.user_prompts import sample_user_prompts
from bfpo.eval.judges import get_judge
from bfpo.data.records import PairRecord

X = Path(os.environ.get("SWEEP_DIR", "/tmp/x"))  # cache: sampled prompts, pairs, models
base = str(smollm2_dir())
s = D.DemoSettings()
judge = get_judge("refusal")


def cached(name, fn):
    p = X / name
    if p.exists():
        return json.loads(p.read_text())
    v = fn()
    p.write_text(json.dumps(v))
    return v


def self_prompts():
    m, t = load_for_generation(base)
    t0 = time.time()
    out = sample_user_prompts(m, t, 480, seed=20251201, bf16=True)
    print("sampled", len(out), time.time() - t0)
    return out


SP = cached("self_prompts.json", self_prompts)
prompts = D.demo_prompts(replace(s, train_benign=None))
evaltexts = {r["prompt"].strip().lower() for rows in prompts["eval"].values() for r in rows}
SP = [p for p in SP if p.lower() not in evaltexts]
val_self = [{"prompt": p, "kind": "benign", "category": "self"} for p in SP[:48]]
train_self = [{"prompt": p, "kind": "benign", "category": "self"} for p in SP[48:]]
VAL = {"harmful": prompts["val_harmful"], "benign_hand": prompts["val_benign"], "benign_self": val_self}


def score(model_dir, tag):
    p = X / f"val_{tag}.json"
    if p.exists():
        return json.loads(p.read_text())
    m, t = load_for_generation(model_dir)
    res = {}
    for k, rows in VAL.items():
        ans = [
            a[0]
            for a in generate(
                m, t, [r["prompt"] for r in rows], max_new_tokens=48, batch_size=16, bf16=True, progress=False
            )
        ]
        kind = "harmful" if k == "harmful" else "benign"
        v = judge.judge([r["prompt"] for r in rows], ans, kinds=[kind] * len(rows))
        ref = [x.refusal for x in v]
        res[k] = {
            "rate": 100 * (sum(not r for r in ref) if kind == "harmful" else sum(ref)) / len(ref),
            "answers": list(zip([r["prompt"] for r in rows], ans, ref)),
        }
    p.write_text(json.dumps(res))
    return res


def show(tag, res):
    print(
        f"{tag}: harmful answered {res['harmful']['rate']:.1f}  hand benign refused {res['benign_hand']['rate']:.1f}  self benign refused {res['benign_self']['rate']:.1f}",
        flush=True,
    )


def pairs():
    ps = dict(prompts)
    ps["train_benign"] = prompts["train_benign"][:128] + train_self[:320]
    ps["train_harmful"] = D._take(prompts["train_harmful"], 128, 0)
    d = D.build_pairs(base, ps, replace(s, train_harmful=128), progress=False)
    return {"safety": [r.to_dict() for r in d["safety"]], "helpful": [r.to_dict() for r in d["helpful"]]}


t0 = time.time()
P = cached("pairs.json", pairs)
print("pairs", time.time() - t0, len(P["safety"]), len(P["helpful"]))


def recs(rows):
    return [PairRecord(**{k: v for k, v in r.items() if k in PairRecord.__dataclass_fields__}) for r in rows]


SAFETY, HELPFUL = recs(P["safety"]), recs(P["helpful"])
show("base", score(base, "base"))


def variant(tag, n_harm_prompts=64, n_hand=128, n_self=0, **kw):
    hs = {r["prompt"] for r in prompts["train_harmful"][:0]}
    harm_prompts = list(dict.fromkeys(r.prompt for r in SAFETY))[:n_harm_prompts]
    safety = [r for r in SAFETY if r.prompt in set(harm_prompts)]
    hand = [r for r in HELPFUL if r.metadata.get("category") != "self"][:n_hand]
    selfp = [r for r in HELPFUL if r.metadata.get("category") == "self"][:n_self]
    st = replace(s, **kw)
    out = X / f"sft_{tag}"
    if not (out / "config.json").exists():
        t0 = time.time()
        info = D.run_sft(base, safety, hand + selfp, out, st)
        print(tag, "sft", time.time() - t0, info["examples"], flush=True)
    r = score(str(out), tag)
    show(tag, r)
    return r


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        tag, _, args = spec.partition(":")
        kw = {
            k: (float(v) if ("." in v or "e" in v) else int(v)) for k, v in (a.split("=") for a in args.split(",") if a)
        }
        variant(tag, **kw)
