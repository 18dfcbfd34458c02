"""The demo base's recipe: size and pretraining schedule (torch-free, so the asset check can read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaseSpec:
    """Size and pretraining schedule of the demo base. Defaults = the shipped demo (conf/model/demo-base.yaml)."""

    vocab_size: int = 2048  # BPE vocabulary (special tokens included)
    hidden_size: int = 256  # model width (elements)
    num_hidden_layers: int = 4  # decoder layers
    num_attention_heads: int = 4  # query heads
    num_key_value_heads: int = 2  # key/value heads (GQA)
    intermediate_size: int = (
        704  # MLP width (elements); a multiple of 64: bitsandbytes' CPU 4-bit kernel needs it
    )
    max_position_embeddings: int = 512  # longest context (tokens)
    train_docs: int = 12000  # pretraining documents (tokenizer and model)
    heldout_docs: int = 400  # held-out documents for the perplexity (a different seed)
    block_len: int = 128  # tokens per packed pretraining sequence
    batch_size: int = 32  # sequences per optimizer step
    steps: int = 150  # optimizer steps
    autocast_bf16: bool = (
        True  # bf16 autocast for the pretraining matmuls (fp32 master weights; ~2× faster on CPU)
    )
    lr: float = 3e-3  # peak learning rate (AdamW, linear warm-up then cosine decay)
    warmup_steps: int = 20  # linear warm-up steps
    seed: int = 0  # seeds the text, the initialisation and the batch order
