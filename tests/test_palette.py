"""LAMIA palette: mask, losses, the two passes, training, checkpoints (tiny random OPT / GPT-2 / LLaMA, and
OPT-350M's own layout), and the GPU recipe's settings run on CPU."""
import dataclasses
import json
import math
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from assets.palette import PaletteModelConfig, palette_config
from ops import datasets
from ops.ingest.mind import load_mind
from ops.palette import PaletteConfig, PaletteModel, extract, latest_checkpoint, load_model, prepare_data
from ops.palette.losses import inter_palette_loss, intra_palette_loss, position_correlation
from ops.palette.mask import CONTENT, LAP, LDP, PAD, TASK, additive_mask, allowed, full_row, pack
from ops.palette.train import batch_indices, train
from ops.sample import generate
from ops.tiny_models import save_random_model
from pipeline.definitions import defs
from pipeline.resources import ComputeResource

TASKS = ["title", "abstract", "category", "subcategory"]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    raw = generate("mind", tmp_path_factory.mktemp("raw") / "m", "tiny", seed=0)
    return load_mind(raw, "m").items


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    # init_std 0.2: a frozen random LM head at the usual 0.02 cannot express a peaked next-token distribution
    return {f: str(save_random_model(f, root / f, hidden=32, layers=2, heads=2, causal_lm=True, init_std=0.2))
            for f in ("opt", "gpt2", "llama", "opt-350m")}


def _model(path, **kw):
    # float32 unless a test asks: these tests compare numbers exactly, and `auto` autocasts a palette in bf16 on a
    # CPU with native bf16 units
    kw.setdefault("dtype", "float32")
    cfg = PaletteConfig(model=path, lora_rank=8, lora_alpha=16, max_content_tokens=32, max_answer_tokens=8,
                        device="cpu", **kw)
    return PaletteModel(cfg, TASKS)


def _data(model, items, n=None):
    return prepare_data(items.head(n) if n else items, TASKS, 2, model.tokenizer, model.cfg)


# --- mask ----------------------------------------------------------------------------------------------------------
def test_hierarchical_mask_equals_the_hand_written_one():
    # [c0 c1 | a0 a1 | d0 d1 | task ans | pad], L = 2
    blocks = torch.tensor([[CONTENT, CONTENT, LAP, LAP, LDP, LDP, TASK, TASK, PAD]])
    expected = torch.tensor([
        # c0 c1 a0 a1 d0 d1 t  x  pad
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # c0: causal in content
        [1, 1, 0, 0, 0, 0, 0, 0, 0],  # c1
        [1, 1, 1, 0, 0, 0, 0, 0, 0],  # a0: content + causal in LaP
        [1, 1, 1, 1, 0, 0, 0, 0, 0],  # a1
        [0, 0, 0, 0, 1, 0, 0, 0, 0],  # d0: causal in LdP only
        [0, 0, 0, 0, 1, 1, 0, 0, 0],  # d1
        [0, 0, 0, 0, 1, 1, 1, 0, 0],  # task: LdP + causal in task block
        [0, 0, 0, 0, 1, 1, 1, 1, 0],  # answer token
        [0, 0, 0, 0, 0, 0, 0, 0, 1],  # padding sees itself only
    ], dtype=torch.bool)
    assert torch.equal(allowed(blocks)[0], expected)
    two_way = allowed(blocks, bidirectional=(CONTENT,))[0]
    assert two_way[0, 1] and torch.equal(two_way[1:], expected[1:])  # only content becomes bidirectional
    add = additive_mask(allowed(blocks), torch.float32)
    assert add.shape == (1, 1, 9, 9) and add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.float32).min


def test_pack_positions_and_labels():
    row = full_row([7, 8, 9], 2, [5, 6])
    p = pack([row, full_row([7], 2, [5])], pad_id=0, left=False)
    assert p.blocks[0].tolist() == [CONTENT] * 3 + [LAP] * 2 + [LDP] * 2 + [TASK] * 3
    assert p.positions[0].tolist() == list(range(10))
    # the task token (index 7) predicts answer[0], answer[0] predicts answer[1] (the end token), the last nothing
    assert p.labels[0].tolist() == [-100] * 7 + [5, 6, -100]
    assert p.slots[0].tolist() == [False] * 3 + [True] * 5 + [False] * 2
    assert p.blocks[1].tolist()[-2:] == [PAD, PAD]


# --- losses --------------------------------------------------------------------------------------------------------
def test_losses_equal_their_formulas_on_hand_made_vectors():
    s = 1 / math.sqrt(2)
    one_item = torch.tensor([[[1.0, 0.0], [s, s], [-1.0, 0.0]]])  # cosines: 0.7071, -1, -0.7071
    hinge_intra = (s - 0.1) ** 2 + 0 + 0
    assert intra_palette_loss(one_item, 0.1, "mean").item() == pytest.approx(hinge_intra / 3, rel=1e-6)
    # the paper's sum runs over ordered pairs (j, k != j): every unordered pair twice
    assert intra_palette_loss(one_item, 0.1).item() == pytest.approx(2 * hinge_intra, rel=1e-6)
    two_items = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.6, 0.8], [0.0, 3.0]]])  # position 0: cos .6, 1: cos 0
    hinge_inter = (0.6 - 0.25) ** 2 + 0
    assert inter_palette_loss(two_items, 0.25, "mean").item() == pytest.approx(hinge_inter / 2, rel=1e-6)
    assert inter_palette_loss(two_items, 0.25, "sum").item() == pytest.approx(2 * hinge_inter, rel=1e-6)
    # within item 0: cos 1; within item 1: cos 0.8
    both = (1 - 0.1) ** 2 + (0.8 - 0.1) ** 2
    assert intra_palette_loss(two_items, 0.1, "mean").item() == pytest.approx(both / 2, rel=1e-6)
    assert intra_palette_loss(two_items, 0.1, "sum").item() == pytest.approx(2 * both, rel=1e-6)
    assert inter_palette_loss(one_item, 0.25).item() == 0.0  # no negative in a batch of one
    assert position_correlation(one_item) == pytest.approx((s + 1 + s) / 3, rel=1e-6)


# --- the two passes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["opt", "gpt2", "llama", "opt-350m"])
def test_split_passes_equal_the_full_layout(backbones, items, family):
    model = _model(backbones[family]).eval()
    data = _data(model, items, 6)
    idx = [0, 3, 5]
    with torch.no_grad():
        palette = model.palette(data, idx)
        gen = model.generation_loss(data, idx, palette)
        palette_full, gen_full = model.full_layout(data, idx)
    # OPT-350M projects its 32-wide hidden states back to the 16-wide embedding space: the palette lives there
    assert palette.shape == (3, 4, 16 if family == "opt-350m" else 32)
    torch.testing.assert_close(palette, palette_full, atol=2e-5, rtol=1e-4)
    assert gen.item() == pytest.approx(gen_full.item(), abs=1e-5)
    assert gen.item() == pytest.approx(math.log(model.tokenizer.vocab_size), rel=0.25)  # untrained: near uniform


def test_eager_and_sdpa_attention_agree(backbones, items):
    losses = []
    for impl in ("eager", "sdpa"):
        model = _model(backbones["opt"], attn_implementation=impl).eval()
        assert model.backbone.config._attn_implementation == impl
        data = _data(model, items, 4)
        with torch.no_grad():
            losses.append(model.full_layout(data, [0, 1, 2, 3])[1].item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_content_reaches_the_answer_only_through_the_palette(backbones, items):
    model = _model(backbones["opt"]).eval()
    data = _data(model, items, 2)
    rows = [full_row(data.content[0], 4, data.answers[0][2])]  # predict the category
    scrambled = list(data.content[0])
    scrambled[1:] = torch.randint(1000, 2000, (len(scrambled) - 1,)).tolist()
    fixed = torch.randn(1, 4, 32)  # a palette held fixed
    task = model.task[2][None, None]

    def loss(content, palette=None):
        packed = pack([full_row(content, 4, data.answers[0][2])], model.pad_id, left=False)
        lap = model.lap[None]
        if palette is None:  # pass 1 on this content
            h1 = model.hidden(packed, torch.cat([lap, model.ldp_placeholder[None], task], dim=1))
            palette = h1[packed.blocks == LAP].view(1, 4, -1)
        return model._gen(packed, model.hidden(packed, torch.cat([lap, palette, task], dim=1))).item()

    with torch.no_grad():
        assert rows[0].blocks.count(CONTENT) == len(data.content[0])
        # Palette fixed: other content leaves the answer loss exactly as it was (no path but the palette) ...
        assert loss(scrambled, fixed) == loss(data.content[0], fixed)
        # ... and so does the LdP placeholder of pass 1; with the palette read from the content, it changes.
        before = loss(data.content[0])
        model.ldp_placeholder.normal_()
        assert loss(data.content[0]) == before
        assert abs(loss(scrambled) - before) > 1e-4


def test_batches_are_a_function_of_seed_and_step():
    cfg = PaletteConfig(batch_size=4, seed=3)
    first = [batch_indices(cfg, 10, s) for s in range(5)]
    assert first == [batch_indices(cfg, 10, s) for s in range(5)]
    assert sorted(first[0] + first[1] + first[2][:2]) == list(range(10))  # one epoch = each item once
    assert all(len(b) == 4 for b in first)


# --- training ------------------------------------------------------------------------------------------------------
def _train(backbones, items, steps, root=None, **kw):
    model = _model(backbones["opt"], **{"lr": 1e-2, "batch_size": 16, "micro_batch_size": 8, "max_steps": steps,
                                        **kw})
    data = _data(model, items)
    return model, data, train(model, data, root)


def test_training_reduces_generation_and_contrastive_losses(backbones, items):
    # the mean form at gamma 1: both kinds of term weigh alike, so each must fall on its own (the paper's sums
    # weigh the contrastive terms B*L(L-1) / B(B-1)L times more, and L_gen moves little beside them here)
    _, _, res = _train(backbones, items, 24, gamma=1.0, contrastive_reduction="mean")
    h = res.history
    mean = {t: (np.mean([r[t] for r in h[:3]]), np.mean([r[t] for r in h[-3:]])) for t in ("gen", "intra", "inter")}
    assert mean["gen"][1] < mean["gen"][0] - 0.3, mean  # nats per answer token
    assert mean["intra"][1] < 0.6 * mean["intra"][0] and mean["inter"][1] < 0.6 * mean["inter"][0], mean
    assert len(h) == 24 and res.items_seen == 24 * 16


def test_intra_loss_decorrelates_palette_positions(backbones, items):
    corr = {}
    for use_intra in (True, False):
        model, data, _ = _train(backbones, items, 12, gamma=1.0, use_intra=use_intra, contrastive_reduction="mean")
        corr[use_intra] = position_correlation(torch.from_numpy(extract(model, data)))
    assert corr[True] < corr[False] - 0.1, corr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_path_runs_under_cpu_autocast(backbones, items, tmp_path, dtype):
    """The GPU recipe's autocast path (bf16; fp16 with loss scaling), run here under CPU autocast."""
    reference = _train(backbones, items, 4)[2].history  # float32
    model, data, res = _train(backbones, items, 4, root=tmp_path, dtype=dtype)
    assert model.autocast_dtype == getattr(torch, dtype) and model.describe()["dtype"] == dtype
    seen = []
    q_proj = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
    q_proj.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    palette = extract(model, data)
    assert seen and set(seen) == {getattr(torch, dtype)}  # the matmuls really ran in half precision
    assert palette.dtype == np.float32 and np.isfinite(palette).all()
    # same batches, same seeds: the losses follow the float32 run to half-precision rounding
    np.testing.assert_allclose([h["gen"] for h in res.history], [h["gen"] for h in reference], atol=0.05)
    state = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    if dtype == "float16":  # loss scaling on, no overflow at this scale; its state is checkpointed for a resume
        assert [h["loss_scale"] for h in res.history] == [2.0 ** 16] * 4 and state["scaler"]["scale"] == 2.0 ** 16
    else:
        assert "loss_scale" not in res.history[-1] and state["scaler"] is None


def test_out_of_memory_redoes_the_step_in_smaller_micro_batches(backbones, items, monkeypatch):
    import importlib

    train_mod = importlib.import_module("ops.palette.train")  # (the package re-exports `train`, the function)

    reference = _train(backbones, items, 3, micro_batch_size=4)  # what a device holding 4 items computes
    real = train_mod.loss_terms

    def small_device(model, data, idx):  # a device that cannot hold more than 4 items per forward
        if len(idx) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, data, idx)

    monkeypatch.setattr(train_mod, "loss_terms", small_device)
    model, data, res = _train(backbones, items, 3)  # configured micro-batch 8
    assert res.extra["micro_batch_size"] == 4 and res.extra["out_of_memory_backoffs"] == [
        {"step": 1, "micro_batch_size": 4}]
    for got, want in zip(res.history, reference[2].history):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    torch.testing.assert_close(model.lap, reference[0].lap)
    monkeypatch.setattr(train_mod, "loss_terms", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError):  # nothing fits even one item: the error is not swallowed
        _train(backbones, items, 1)


def test_checkpoint_round_trip_and_resume(backbones, items, tmp_path):
    model, data, res = _train(backbones, items, 4, root=tmp_path / "a", checkpoint_every=2)
    ck = latest_checkpoint(tmp_path / "a")
    assert ck is not None and ck.name == "step-0000004" and (ck / "adapter" / "adapter_model.safetensors").is_file()
    expected = extract(model, data)
    reloaded = load_model(ck)
    np.testing.assert_array_equal(extract(reloaded, data), expected)  # save -> load -> identical palettes

    class Crash(Exception):
        pass

    def crash_at_3(row):
        if row["step"] == 3:
            raise Crash

    interrupted = _model(backbones["opt"], lr=1e-2, batch_size=16, micro_batch_size=8, max_steps=4,
                         checkpoint_every=2)
    with pytest.raises(Crash):
        train(interrupted, data, tmp_path / "b", on_step=crash_at_3)
    assert latest_checkpoint(tmp_path / "b").name == "step-0000002"
    _, _, resumed = _train(backbones, items, 4, root=tmp_path / "b", checkpoint_every=2)
    assert resumed.resumed_from == 2
    for a, b in zip(res.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(extract(load_model(latest_checkpoint(tmp_path / "b")), data), expected, atol=1e-5)


def test_restricted_answer_vocabulary_is_a_softmax_over_answer_tokens(backbones, items):
    model = _model(backbones["opt"], answer_vocabulary="answers").eval()
    data = _data(model, items, 5)
    model.restrict_vocabulary(data)
    vocab = model.vocabulary.tolist()
    assert vocab == sorted({t for a in data.answers for ans in a for t in ans}) and len(vocab) < 1000
    h = torch.randn(3, 32)
    full = model.head(h)
    torch.testing.assert_close(model.logits(h), full[:, vocab])  # the same scores, other columns dropped
    with torch.no_grad():
        palette = model.palette(data, [0, 1])
        restricted = model.generation_loss(data, [0, 1], palette).item()
        model.vocabulary = None
        unrestricted = model.generation_loss(data, [0, 1], palette).item()
    assert 0 < restricted < unrestricted  # fewer competitors, lower cross-entropy


def test_summary_lap_init_starts_at_the_summary_token(backbones):
    random_init, summary = _model(backbones["opt"]), _model(backbones["opt"], lap_init="summary")
    tok = summary.tokenizer
    token = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    word = summary.backbone.get_input_embeddings().weight[token].detach()
    # Same draw (same seed), scaled by 0.1 and shifted onto the CLS (else BOS) embedding.
    torch.testing.assert_close(summary.lap.detach(), word + 0.1 * random_init.lap.detach())
    cos = torch.nn.functional.cosine_similarity(summary.lap.detach(), word[None], dim=-1)
    assert (cos > 0.9).all() and not torch.equal(summary.lap[0], summary.lap[1])  # near it, positions distinct
    assert "lap_init" in summary.cfg.training_fields()  # a different init never resumes the other's checkpoint
    with pytest.raises(ValueError, match="lap_init"):
        PaletteConfig(lap_init="zeros")


# --- the GPU recipe --------------------------------------------------------------------------------------------------
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "lamia_mind_opt350m_gpu.yaml"


def test_gpu_recipe_is_valid_run_config_with_the_papers_settings_and_trains_on_opt_350m_layout(backbones, items):
    import yaml

    run_config = yaml.safe_load(RECIPE.read_text())
    # raises DagsterInvalidConfigError on an unknown key or a wrong type (a typo would otherwise surface at launch)
    resolved = dg.validate_run_config(defs.resolve_job_def("full_pipeline_job"), run_config)
    from assets.recommend import run_config as recommender_config
    from ops import recommend
    from ops.recommend.generative import GenerativeConfig

    paper_rec = GenerativeConfig()  # the recommender's defaults are the paper's settings too
    for op in ("lamia", "pca_kmeans", "random"):
        # a recommender is a graph of steps: its config (defaults filled) is what its config mapping receives
        given = run_config["ops"][f"recommender__generative_llm__{op}"]["config"]
        rec = recommender_config(recommend.get("generative_llm"), op)(**given).model_dump()
        assert rec["model"] == "bert-base-uncased" and rec["seeds"] == [0, 1, 2] and rec["align"] is True
        for name in ("lr", "batch_size", "lora_rank", "patience", "max_history"):
            assert rec[name] == getattr(paper_rec, name), name
    # code_table/lamia takes L from the palette (no `length` of its own that could disagree with palette_size)
    assert resolved["ops"]["palette_model"]["config"]["palette_size"] == 4
    assert "length" not in resolved["ops"]["code_table__lamia"]["config"]
    op = PaletteModelConfig(**run_config["ops"]["palette_model"]["config"])
    cfg = palette_config(op, ComputeResource(device="cpu", dtype="auto"), datasets.get("mind"))
    paper = PaletteConfig()  # the defaults are the paper's settings (DESIGN §5), but for the offline backbone
    assert cfg.model == "facebook/opt-350m" and paper.model == "SmolLM2-135M-Instruct"
    for name in ("palette_size", "lora_rank", "lora_alpha", "lr", "batch_size", "epochs", "gamma",
                 "alpha_intra", "alpha_inter", "answer_vocabulary", "lap_init", "use_gen", "use_intra", "use_inter"):
        assert getattr(cfg, name) == getattr(paper, name), name
    assert cfg.tasks == ["title", "abstract", "category", "subcategory"] and cfg.content_attributes == 2
    assert cfg.batch_size % cfg.micro_batch_size == 0  # whole micro-batches per step
    # Every setting of the recipe but the weights (OPT-350M's layout at toy width) and the run length.
    cfg = dataclasses.replace(cfg, model=backbones["opt-350m"], max_steps=2, batch_size=64, micro_batch_size=16)
    model = PaletteModel(cfg, cfg.tasks)
    data = prepare_data(items, cfg.tasks, cfg.content_attributes, model.tokenizer, cfg)
    res = train(model, data)
    assert model.vocabulary is None and model.describe()["lora_target_modules"] == ["q_proj", "v_proj"]
    assert len(res.history) == 2 and res.items_seen == 128
    assert all(math.isfinite(r["loss"]) and r["gen"] > 0 for r in res.history)
    palette = extract(model, data, cfg.extract_batch_size)
    assert palette.shape == (len(items), 4, 16) and np.isfinite(palette).all()


# --- the pretrained causal LM (SmolLM2-135M, the default backbone) ------------------------------------------------
def _smollm2(**kw):
    from ops.models import SMOLLM2

    cfg = PaletteConfig(model=SMOLLM2, lora_rank=4, lora_alpha=8, max_content_tokens=16, max_answer_tokens=4,
                        lr=1e-2, batch_size=8, micro_batch_size=8, device="cpu", **kw)
    return PaletteModel(cfg, TASKS)


def test_smollm2_palette_trains_resumes_and_decorrelates_its_positions(items, tmp_path):
    model = _smollm2(max_steps=8, checkpoint_every=4)
    assert model.decoder_only and model.head is not None and model.bidirectional == ()  # causal blocks, real head
    assert model.target_modules == ["q_proj", "v_proj"]
    data = _data(model, items, 8)
    before = position_correlation(torch.from_numpy(extract(model, data)))
    full = train(model, data, tmp_path / "a")
    terms = [[h[k] for h in full.history] for k in ("loss", "gen", "intra", "inter")]
    assert all(math.isfinite(v) for row in terms for v in row)
    # one batch of all 8 items every step: the total falls, and L_gen with it
    assert terms[0][-1] < terms[0][0] and terms[1][-1] < terms[1][0]
    after = position_correlation(torch.from_numpy(extract(model, data)))
    assert after < before - 0.05, (before, after)

    class Crash(Exception):
        pass

    def crash_at_6(row):
        if row["step"] == 6:
            raise Crash

    with pytest.raises(Crash):
        train(_smollm2(max_steps=8, checkpoint_every=4), data, tmp_path / "b", on_step=crash_at_6)
    resumed = train(_smollm2(max_steps=8, checkpoint_every=4), data, tmp_path / "b")
    assert resumed.resumed_from == 4
    for a, b in zip(full.history, resumed.history, strict=True):  # the same losses as the uninterrupted run
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)


def test_palette_extraction_split_over_workers_equals_one_worker(backbones, items, tmp_path):
    from ops.palette.train import ExtractConfig, extract_shards

    model, data, _ = _train(backbones, items, 2, root=tmp_path / "ck", checkpoint_every=2)
    keys = [f"h{i}" for i in range(len(data))]
    one = extract_shards(model, data, keys, ExtractConfig(workers=1, shard_size=16), tmp_path / "one").vectors
    split = ExtractConfig(workers=3, shard_size=16)
    # each worker a model of its own, loaded from the checkpoint as its own step process would
    runs = [extract_shards(load_model(latest_checkpoint(tmp_path / "ck")), data, keys, split, tmp_path / "three", w)
            for w in range(3)]
    assert [r.vectors for r in runs] == [None, None, None]
    assert sum(r.computed for r in runs) == -(-len(data) // 16)
    merged = extract_shards(load_model(latest_checkpoint(tmp_path / "ck")), data, keys, split, tmp_path / "three")
    assert merged.computed == 0 and merged.vectors.tobytes() == one.tobytes()
