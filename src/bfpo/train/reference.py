"""Reference log-probs computed once, before training, and cached on disk.

The reference policy pi_ref is the starting policy (Algorithm 1, line 1). With precomputed log-probs no
second copy of the model is ever held: the policy itself scores every pair in one no-grad pass before its
first update. The cache is keyed by a fingerprint of the model (config and a sample of every weight), of
the tokenised data and of the numerics settings (dtype, attention, packing, lengths), so a changed model,
dataset or precision never reuses stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm.auto import tqdm

from bfpo.train.collator import REF_KEYS, PairCollator, model_inputs

logger = logging.getLogger(__name__)


def model_fingerprint(model) -> str:
    """Hash of the config and, for every parameter, its name, shape and a sample of its values."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)[:4096].to("cpu", torch.float64)
            h.update(f"{name}:{tuple(p.shape)}:{flat.sum().item():.10e}:{flat.abs().sum().item():.10e}".encode())
    return h.hexdigest()


def data_fingerprint(examples: List[Dict]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]]).encode())
    return h.hexdigest()


def settings_fingerprint(settings: Dict) -> str:
    """Hash of every setting that changes the reference numbers without changing the model or the token
    ids: autocast dtype, parameter dtype, attention implementation, padding-free packing, the length limits
    and the LM-head tile size. A cache computed in fp32 is then never reused under bf16 (where h would not
    be 0 at step 0)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(model, examples: List[Dict], settings: Dict) -> str:
    """File stem of the reference cache: model, data and numerics fingerprints."""
    return f"{model_fingerprint(model)[:16]}-{data_fingerprint(examples)[:16]}-{settings_fingerprint(settings)[:12]}"


def default_cache_dir() -> Path:
    """``cache_dir("ref_logps")``: under ``$BFPO_CACHE``, else ``~/.cache/bfpo``."""
    from bfpo.files import cache_dir

    return cache_dir("ref_logps")


@torch.no_grad()
def compute_reference_logps(
    model,
    examples: List[Dict],
    collator: PairCollator,
    batch_size: int = 8,
    device: Optional[torch.device] = None,
    autocast_dtype: Optional[torch.dtype] = None,
    indices: Optional[List[int]] = None,
    desc: str = "reference log-probs",
):
    """Score (chosen, rejected) of ``examples[indices]`` with ``model`` (patched by
    ``add_response_logps_forward``); returns two float32 tensors aligned with ``indices``."""
    indices = list(range(len(examples))) if indices is None else indices
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, leave=False):
        batch = collator([examples[i] for i in indices[start : start + batch_size]])
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**{k: v.to(device) for k, v in model_inputs(batch).items()})
        n = batch["safe_chosen"].shape[0]
        chosen.append(out.logps[:n].float().cpu())
        rejected.append(out.logps[n:].float().cpu())
    model.train(was_training)
    return torch.cat(chosen) if chosen else torch.zeros(0), torch.cat(rejected) if rejected else torch.zeros(0)


def attach_reference_logps(examples: List[Dict], chosen: torch.Tensor, rejected: torch.Tensor) -> List[Dict]:
    """Return new example dicts carrying ``ref_chosen_logps`` / ``ref_rejected_logps``."""
    return [
        {**ex, REF_KEYS[0]: float(c), REF_KEYS[1]: float(r)}
        for ex, c, r in zip(examples, chosen.tolist(), rejected.tolist())
    ]


def load_cached(path: Path, n: int):
    """(chosen, rejected) reference log-probs of ``n`` pairs from the cache file, or None to recompute.

    Read with ``weights_only=True`` (tensors only, never pickled code). A file that cannot be read, has the
    wrong shape or holds non-finite numbers is ignored with a warning naming it; the caller recomputes and
    overwrites it.
    """
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        chosen, rejected = data["chosen"], data["rejected"]
        ok = (
            isinstance(chosen, torch.Tensor)
            and isinstance(rejected, torch.Tensor)
            and chosen.shape == rejected.shape == (n,)
            and bool(torch.isfinite(chosen).all())
            and bool(torch.isfinite(rejected).all())
        )
    except Exception as e:  # noqa: BLE001 - any unreadable cache file is recomputed, never trusted
        logger.warning("reference cache %s is unreadable (%s: %s); recomputing it", path, type(e).__name__, e)
        return None
    if not ok:
        logger.warning("reference cache %s does not hold %d finite log-probs per side; recomputing it", path, n)
        return None
    return chosen, rejected


def save_cached(path: Path, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"chosen": chosen, "rejected": rejected}, tmp)
    os.replace(tmp, path)
