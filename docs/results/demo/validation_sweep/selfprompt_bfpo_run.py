"""Validation-only: on-policy pairs + BFPO with checkpoint selection from a cached SFT model of explore.py."""

import sys, json, time
from pathlib import Path

sys.argv, args = sys.argv[:1], sys.argv[1:]
exec(open(str(Path(__file__).with_name("selfprompt_sft_run.py"))).read().split('if __name__ == "__main__":')[0])
from dataclasses import replace as _r


def bfpo_variant(tag, sft_tag, n_harm_prompts=128, n_hand=128, n_self=0, **kw):
    harm_prompts = set(list(dict.fromkeys(r.prompt for r in SAFETY))[:n_harm_prompts])
    safety = [r for r in SAFETY if r.prompt in harm_prompts]
    hand = [r for r in HELPFUL if r.metadata.get("category") != "self"][:n_hand]
    selfp = [r for r in HELPFUL if r.metadata.get("category") == "self"][:n_self]
    st = _r(s, **kw)
    sft_dir = X / f"sft_{sft_tag}"
    vp = {"val_harmful": VAL["harmful"], "val_benign": VAL["benign_hand"] + VAL["benign_self"]}
    refp = X / "base_point.json"
    basept = D._score_base(Path(base), vp, st)
    t0 = time.time()
    own = D.sample_policy_pairs(str(sft_dir), safety, hand + selfp, st, progress=False)
    print(tag, "on-policy", time.time() - t0, own["own_unsafe"], own["own_benign_refusals"], flush=True)
    sel = D._selector(Path(base), vp, st, reference=basept)
    t0 = time.time()
    info = D.run_preference(
        str(sft_dir),
        own["safety"],
        own["helpful"],
        "bfpo",
        X / f"bfpo_{tag}",
        st,
        str(X / f"ref_{tag}"),
        callbacks=[sel],
    )
    summ = sel.summary()
    print(tag, "bfpo", time.time() - t0, "base", basept, flush=True)
    for p in summ["points"]:
        print(tag, p, flush=True)
    print(tag, "chosen", summ["chosen_step"], flush=True)
    r = score(str(X / f"bfpo_{tag}"), f"bfpo_{tag}")
    show(f"bfpo_{tag}", r)


for spec in args:
    tag, _, a = spec.partition(":")
    kw = {
        k: (float(v) if "." in v else (v if not v.lstrip("-").isdigit() else int(v)))
        for k, v in (x.split("=") for x in a.split(",") if x)
    }
    bfpo_variant(tag, **kw)
