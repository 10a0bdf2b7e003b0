"""Recipe exploration on cached generations: SFT + BFPO, validation on held-out training-source prompts."""

import sys, json, argparse, random, time, os

import torch
import random as _r


def take(rows, n, seed=1234):
    rows = list(rows)
    _r.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


from bfpo.eval import promptsets
from bfpo.eval.judges import detect_refusal
from bfpo.data.records import PairRecord
from bfpo.experiments import demo
from bfpo.eval.selection import SelectBySafety
from bfpo.models.generate import load_generation_tokenizer as load_tokenizer

SMOL = "/root/.cache/bfpo/models/SmolLM2-135M-Instruct"
ap = argparse.ArgumentParser()
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--tag", required=True)
ap.add_argument("--n_harm", type=int, default=64)
ap.add_argument("--json", default="{}")
ap.add_argument("--every", type=int, default=8)
ap.add_argument("--nval", type=int, default=32)
ap.add_argument("--sft_from", default="")
a = ap.parse_args()
torch.set_num_threads(2)
import logging

logging.basicConfig(level=logging.INFO)
T0 = time.time()
rng = random.Random(a.seed)
adv = take(promptsets.load_suite("advbench"), None, 7)
dna = take(promptsets.load_suite("donotanswer"), None, 7)
val_h = [r["prompt"] for r in adv[: a.nval // 2] + dna[: a.nval // 2]]
P = json.load(open("/tmp/explore/pairs_s0_h128_e1.json"))
train_b_rows = promptsets.bfpo_prompts("train", "benign")
vb = take(train_b_rows, None, 11)
val_b = [r["prompt"] for r in vb[: a.nval]]
train_b = {r["prompt"]: r for r in vb[a.nval :]}
refusals = promptsets.safe_refusals()
harm = P["harm"][: a.n_harm]
safety, helpful = [], []
for p, samples in harm:
    for s in dict.fromkeys(x.strip() for x in samples):
        if s and not detect_refusal(s):
            safety.append(
                PairRecord(
                    prompt=p,
                    chosen=s,
                    rejected=refusals[len(safety) % len(refusals)]["text"],
                    safe_chosen=0.0,
                    safe_rejected=1.0,
                    kind="safety",
                )
            )
pool = [t for pair in zip(demo.GENERIC_REFUSALS * 8, [r["text"] for r in refusals]) for t in pair]
if json.loads(a.json).get("helpful_rejected") == "generic":
    pool = list(demo.GENERIC_REFUSALS)
for p, x in P["benign"]:
    if p in train_b and x.strip() and not detect_refusal(x):
        helpful.append(
            PairRecord(
                prompt=p,
                chosen=x.strip(),
                rejected=pool[len(helpful) % len(pool)],
                safe_chosen=1.0,
                safe_rejected=1.0,
                kind="helpful",
            )
        )
print("safety", len(safety), "helpful", len(helpful), "val", len(val_h), len(val_b), flush=True)
kw = dict(gen_max_new_tokens=48, eval_max_new_tokens=48, max_length=160, seed=a.seed)
kw.update(json.loads(a.json))
s = demo.DemoSettings(**kw)
out = f"/tmp/explore2/{a.tag}"
os.makedirs(out, exist_ok=True)
tok = load_tokenizer(SMOL)
res = {"args": vars(a), "settings": kw, "pairs": [len(safety), len(helpful)]}
t = time.time()
if a.sft_from:
    start = f"/tmp/explore2/{a.sft_from}/sft"
    res["sft_from"] = a.sft_from
elif s.sft_steps:
    info = demo.run_sft(SMOL, safety, helpful, f"{out}/sft", s)
    res["sft_s"] = round(time.time() - t)
    res["sft_loss"] = info["loss"]
    start = f"{out}/sft"
else:
    start = SMOL
print("sft", res.get("sft_s"), flush=True)
sel = SelectBySafety(tok, val_h, val_b, every=a.every, max_new_tokens=48, progress=False)
t = time.time()
info = demo.run_preference(start, safety, helpful, "bfpo", f"{out}/bfpo", s, f"{out}/refcache", callbacks=[sel])
res["bfpo_s"] = round(time.time() - t)
res["selection"] = sel.summary()
res["log"] = [
    {k: round(v, 3) for k, v in r.items() if k.startswith("margins/") or k in ("step", "loss", "grad_norm")}
    for r in info["log"]
]
res["total_s"] = round(time.time() - T0)
for pt in sel.points:
    print(pt, flush=True)
print("SUMMARY", a.tag, res.get("sft_s", 0), res["bfpo_s"], res["selection"]["chosen"], flush=True)
open("/tmp/explore2/summaries.jsonl", "a").write(json.dumps(res) + "\n")
