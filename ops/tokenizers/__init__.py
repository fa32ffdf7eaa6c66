"""Tokenizers (ops.tokenizers.base.Tokenizer) and their registry, from which assets/codes.py builds one
`code_table/<name>` asset each. Adding a tokenizer = one module here + one `register(...)` call."""
from __future__ import annotations

from ops.registry import Registry
from ops.tokenizers.base import Tokenizer, TokenizerEntry
from ops.tokenizers.lamia import LamiaCodes
from ops.tokenizers.moc import MixtureOfCodes
from ops.tokenizers.pca_kmeans import PcaKMeans
from ops.tokenizers.pq import OptimizedProductQuantization, ProductQuantization
from ops.tokenizers.random import RandomCodes
from ops.tokenizers.rqkmeans import RQKMeans
from ops.tokenizers.rqvae import RQVAE
from storage.paths import check_name

# a tokenizer's name is its code table's directory and asset key: a safe path component
REGISTRY: Registry[TokenizerEntry] = Registry("tokenizer", lambda name: check_name("tokenizer", name))
register = REGISTRY.register
get = REGISTRY.lookup


register(TokenizerEntry(
    "pca_kmeans", PcaKMeans,
    "PCA + K-Means on the pooled LLM embedding: one PCA to L x d dims, split into L sub-spaces of d principal "
    "components (coarse to fine, uncorrelated), K-Means with K codes in each (faiss).",
    source="item_embeddings", column="embedding", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "pca_kmeans_lm", PcaKMeans,
    "pca_kmeans on the last-token pooled embedding of the causal LM that the LAMIA palette trains on "
    "(item_embeddings_lm; SmolLM2-135M offline): the like-for-like baseline of `lamia`, same backbone, no palette "
    "training.",
    source="item_embeddings_lm", column="embedding", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "lamia", LamiaCodes,
    "LAMIA: each of the L positions of the learned item palette quantized on its own (PCA D -> d, then K-Means "
    "with K codes, faiss), so every code comes from an independently trained aspect embedding; L is the "
    "palette's size.",
    source="palette_embeddings", column="palette", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "moc", MixtureOfCodes,
    "Mixture-of-Codes: a VQ autoencoder on the pooled embedding whose latent N independent codebooks (K codes "
    "each) quantize in parallel; a shared decoder reconstructs from the mean of the N codewords. N = `length` "
    "(the paper's scaling study: 1, 2, 3, 7); `decoder: per_codebook` gives each codebook its own decoder.",
    source="item_embeddings", column="embedding", kinds=frozenset({"pytorch", "parquet"})))
register(TokenizerEntry(
    "rqvae", RQVAE,
    "RQ-VAE (TIGER): a VQ autoencoder on the pooled embedding whose latent L residual levels of K codes quantize "
    "coarse to fine; K-Means-initialised codebooks, dead-code restarts, a collapse guard.",
    source="item_embeddings", column="embedding", kinds=frozenset({"pytorch", "parquet"})))
register(TokenizerEntry(
    "rqkmeans", RQKMeans,
    "Residual K-Means on the pooled embedding (training-free, faiss): level l clusters the residual the earlier "
    "levels left, coarse to fine.",
    source="item_embeddings", column="embedding", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "pq", ProductQuantization,
    "Product quantization (faiss): the embedding cut into M sub-vectors, K = 2^nbits codes each, M parallel codes.",
    source="item_embeddings", column="embedding", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "opq", OptimizedProductQuantization,
    "Optimized product quantization (faiss): PQ after a learned rotation (OPQMatrix) that balances the "
    "sub-spaces' variance.",
    source="item_embeddings", column="embedding", kinds=frozenset({"faiss", "parquet"})))
register(TokenizerEntry(
    "random", RandomCodes,
    "Uniform random codes per item (a pure function of seed and item_id): the sanity baseline every semantic "
    "tokenizer must beat."))

__all__ = ["REGISTRY", "Tokenizer", "TokenizerEntry", "get", "register"]
