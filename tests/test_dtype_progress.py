"""`dtype: auto` picks bf16 on a CPU only where it computes bf16 natively; no shipped config hard-codes a CPU dtype;
long steps log their progress (done / total, rate, time left) into the Dagster run log."""
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import torch
import yaml

from ops import models
from ops.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
# What an AVX2-only CPU gives the libraries: torch's own kernels and oneDNN capped at AVX2 (bf16 then runs on the
# emulated path, tens of times slower than float32, whatever the CPU's flags say).
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _probe(env: dict[str, str]) -> dict:
    code = ("import json, torch; from ops import models; n, why = models.cpu_bf16_native(); "
            "print(json.dumps({'native': n, 'why': why, "
            "'lm': str(models.select_dtype(torch.device('cpu'), 'auto', cpu_bf16=True)), "
            "'small': str(models.select_dtype(torch.device('cpu'), 'auto'))}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_auto_dtype_is_float32_on_a_cpu_without_native_bf16():
    got = _probe(AVX2_ONLY)
    assert got["native"] is False and got["lm"] == "torch.float32" and got["small"] == "torch.float32", got
    assert "float32" in got["why"]


def test_auto_dtype_is_read_off_the_hardware_and_caps_not_timed():
    """The dtype decides the trained weights: it must not depend on how busy the machine is (a timed matmul under
    load gave one run bf16 and the next float32). One oneDNN cap is enough to rule bf16 out; the override wins."""
    flagged = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    capped = _probe({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert capped["native"] is False and capped["lm"] == "torch.float32", capped
    assert _probe({"SEMID_CPU_BF16": "0"})["lm"] == "torch.float32"
    forced = _probe({"SEMID_CPU_BF16": "1"})
    assert forced["native"] is True and forced["lm"] == "torch.bfloat16" and "SEMID_CPU_BF16=1" in forced["why"]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the other core busy
    try:
        loaded = _probe({})
    finally:
        hog.kill()
    assert loaded["native"] is flagged and loaded == _probe({})


def test_auto_dtype_follows_the_cpu_and_small_models_stay_float32():
    got = _probe({})
    flagged = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if not flagged:
        assert got["native"] is False
    assert got["lm"] == ("torch.bfloat16" if got["native"] else "torch.float32"), got
    assert got["small"] == "torch.float32"  # small models and sentence encoders: float32 on any CPU
    # an explicit dtype is always honoured
    assert models.select_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert models.dtype_choice(torch.device("cpu"), "float32", cpu_bf16=True) == "float32 (configured)"


def _dtype_settings(node, where=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "dtype":
                yield where, value, node
            yield from _dtype_settings(value, f"{where}.{key}" if where else str(key))


def test_no_shipped_config_hard_codes_a_cpu_dtype():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        for where, value, node in _dtype_settings(yaml.safe_load(path.read_text()) or {}):
            # a half dtype is only fine where the same config pins a GPU
            assert value == "auto" or str(node.get("device", "")).startswith("cuda"), \
                f"{path.name}: {where} = {value!r} hard-codes a dtype for any device (use auto)"


def test_progress_lines_say_done_total_rate_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="semid")
    p = Progress("training X", 10, unit="steps", every=0.0)
    for i in range(1, 11):
        p.update(i, note="loss 1.0")
    assert len(p.lines) == 9  # nothing after the last unit: the step's own result says it is done
    assert re.fullmatch(r"training X: 5/10 steps \(50 %\), [\d,.]+ steps/s, \d+ s left, loss 1\.0", p.lines[4])
    assert p.lines[0] in caplog.messages
    quiet = Progress("quiet", 10, every=3600.0)
    for i in range(1, 11):
        quiet.update(i)
    assert quiet.lines == []  # short steps say nothing


def test_a_resumed_run_rates_only_its_own_work():
    p = Progress("x", 100, done=90, every=0.0)
    p.update(95)
    rate = float(re.search(r"([\d,.]+) items/s", p.lines[0]).group(1).replace(",", ""))
    left = p.lines[0].split(", ")[-1]
    assert rate > 0 and left.endswith("left")


def test_progress_reaches_the_dagster_run_log(tmp_path, monkeypatch):
    """The `semid` logger is one of the instance's managed loggers (pipeline/dagster.yaml): a training step's
    progress lines land in the run's event log, where `make demo`'s console and the UI show them."""
    from assets import ingest, palette
    from ops.sample import generate
    from ops.tiny_models import save_random_model
    from pipeline.resources import ComputeResource, StorageResource

    monkeypatch.setenv("SEMID_PROGRESS_EVERY_S", "0")
    settings = yaml.safe_load((ROOT / "pipeline" / "dagster.yaml").read_text())
    assert settings["python_logs"]["managed_python_loggers"] == ["semid"]
    generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    opt = str(save_random_model("opt-350m", tmp_path / "opt", causal_lm=True, init_std=0.2))
    config = {"model": opt, "lora_rank": 2, "lora_alpha": 4, "batch_size": 8, "micro_batch_size": 8,
              "max_steps": 3, "checkpoint_every": 0, "max_content_tokens": 16, "max_answer_tokens": 4}
    with dg.instance_for_test(overrides={"python_logs": settings["python_logs"]}) as instance:
        result = dg.materialize(
            [ingest.ingest_raw, palette.palette_model], partition_key="sample_mind", instance=instance,
            resources={"storage": StorageResource(raw_root=str(tmp_path / "raw"),
                                                  storage_root=str(tmp_path / "store")),
                       "compute": ComputeResource(device="cpu")},
            run_config={"ops": {"palette_model": {"config": config}}})
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    progress = [m for m in messages if m.startswith("training PaletteModel:")]
    assert progress[0].startswith("training PaletteModel: 1/3 steps (33 %)") and "left" in progress[0], messages
    meta = result.asset_materializations_for_node("palette_model")[0].metadata
    chosen = "bfloat16" if models.cpu_bf16_native()[0] else "float32"  # the CPU's native bf16, or not
    assert meta["dtype"].value == chosen and meta["dtype_choice"].value.startswith(f"{chosen} (auto: cpu")
    assert f"palette model on cpu, dtype {meta['dtype_choice'].value}" in messages  # logged, and why
