"""Memory of one training step per device, before the run: weights, gradients, AdamW state, activations.

`estimate_memory(spec, devices, device_type)` counts bytes from the spec alone (no model is built). Notation:
N parameters, L blocks, d d_model, F ffn_dim, H / K query / key-value heads, hd head dim, V vocab, b micro
batch, T data.seq_len, n devices; N_blk = parameters of one block, N_root = the rest (embeddings, output head
unless tied, final norm), N_mm = matmul weights (every Linear, the output head even when tied). "Compute in
bf16" is precision bf16, or auto on a GPU (as the training loop decides).

State (AdamW keeps fp32 weights and two fp32 moments):
- one process or DDP:  weights 4 N (+ 2 N_mm: autocast's bf16 copy of every matmul weight, cached from the
  forward until the step's autocast region ends, backward included);  gradients 4 N (+ 4 N DDP buckets,
  n > 1);  optimizer 8 N.
- FSDP over n with the bf16 policy (`fsdp_mixed_precision`: bf16 params, fp32 reduce):  weights 4 N / n
  + 2 N_root (the root's gathered params stay unsharded from forward to backward) + 2 x 2 N_blk (the
  block in use and the one prefetched);  gradients 4 N / n + 2 N_root (the head's unsharded bf16 gradient,
  made first in backward) + 6 N_blk (a block's bf16 gradient and its fp32 copy for the reduce-scatter);
  optimizer 8 N / n.
- FSDP in fp32 (or bf16 autocast without the policy): the same with 4-byte unsharded copies, and in bf16
  autocast's 2 N_mm copies of every matmul weight on top (the "full bf16 copies" the policy removes).

Activations (bytes per token of the micro batch, b T tokens; these are the tensors autograd saves, counted
one by one from llama.py / neox.py; s = bytes of the residual stream, a = bytes of matmul activations):
- fp32: s = a = 4.  bf16 autocast: s = 4 (the fp32 embedding and residual adds keep the stream fp32),
  a = 2.  bf16 FSDP policy: s = a = 2, and every norm upcasts its input to fp32 (4 d more).
- Llama block: input x (s d); RMSNorm: its rsqrt (4), normed (4 d in fp32 and autocast, 2 d + the 4 d fp32
  upcast of x under the policy) and its output as the linears' input (fp32: 4 d, shared by wq/wk/wv;
  autocast: one 2 d bf16 cast per linear, 3 x 2 d; policy: 2 d); attention: q, k and v repeated to H heads
  and SDPA's output, which is wo's input (the (B, T, H hd) reshape is a view): 4 a H hd, plus the
  log-sum-exp (4 H); the residual x1 (s d); the second norm as the first (autocast: 2 casts, for w1 and
  w3); SwiGLU: w1 x, silu(w1 x), w3 x, their product: 4 a F.
  fp32: 24 d + 16 H hd + 16 F + 4 H + 8;  autocast: 26 d + 8 H hd + 8 F + 4 H + 8;  policy: 20 d + (same).
- NeoX block (parallel residual): input x (s d); two LayerNorms, each its mean and rstd (8) and its output as
  a linear input (fp32 4 d; autocast one 2 d cast; policy 2 d + the 4 d fp32 upcast of x); attention: the
  fused qkv output (3 a H hd: v is a view of it), the rotated q and k (made by torch.cat), SDPA's output and
  its reshape copy: 7 a H hd + 4 H; MLP: dense_h_to_4h output and its GELU: 2 a F. Sequential residual: also
  x1 (s d), which the second norm reads.
  fp32: 12 d + 28 H hd + 8 F + 4 H + 16 (16 d sequential);  autocast: 8 d + 14 H hd + 4 F + 4 H + 16
  (12 d);  policy: 14 d (16 d) + (as autocast).
  These per-block counts are exact on CPU: tests/test_memory.py sums the bytes autograd saves in one block
  (fp32, and bf16 autocast). On a GPU SDPA's flash kernel writes its output (B, T, H, hd)-major, so NeoX
  makes no reshape copy there (1 a H hd counted too many).
- With activation checkpointing a block keeps only its input (s d); one block's full set is recomputed at
  a time in backward, so: L s d + one block.  Without: L x one block.
- Head: the last block's output (s d), the final norm (as above), and the logits: 12 V bytes (the fp32
  log-softmax output autograd saves, and in backward its gradient and the logits' gradient, 4 V each).
- CNN (per image, rough: not measured): each stage saves its conv input, ReLU output and pooling indices,
  4 bytes x (c_in S^2 + 2 c_out S^2 + 2 c_out S^2 / 4) at its side S; the head is negligible.

Approximated or left out: the total adds the four parts, as if gradients and optimizer state coexisted with a
forward's activations (true under gradient accumulation, from the second micro batch on; an upper bound on
the first); gradients of activations in flight during backward (a few (b, T, d) and (b, T, F) tensors),
AdamW's foreach temporaries at the step (activations are freed by then), the evaluation pass (micro batches
of eval_batch_size under no_grad), the CUDA context and caching-allocator fragmentation (typically 1-3 GB
and ~5-10% on a GPU: `DEVICE_MEMORY` comparisons leave that margin to the reader), and the CNN's cuDNN
workspace. Measured on CPU in fp32 (peak RSS growth of one training step in a fresh process, against
gradients + optimizer + activations; `benchmarks/memory_cpu.py`, seq 128-512, vocab 4k-16k):

    config (micro batch)        estimate MiB  measured MiB  error
    Llama 4 layers d256 (8)            456.8         475.3   -3.9%
      with checkpointing               332.6         310.5   +7.1%
    Llama 8 layers d384 (4)            781.6         800.2   -2.3%
      with checkpointing               371.1         330.9  +12.2%
    Llama 2 layers d128 (16)           484.0         501.7   -3.5%
    NeoX 4 layers d256 (8)             424.5         446.3   -4.9%
      with checkpointing               324.3         313.5   +3.4%

so -5% (the activation gradients in flight) to +12% (with checkpointing the recomputed block and the logits
are not alive at once). The bf16 modes are not measured here (no GPU): their per-block counts are checked
on CPU autocast, the FSDP buffers are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wsdlab.models.config import CNNConfig, LlamaConfig, LMConfig, NeoXConfig
from wsdlab.train.config import RunSpec

Mode = Literal["fp32", "autocast", "policy"]  # fp32; bf16 autocast; bf16 autocast under the FSDP bf16 policy
# bytes per d_model channel a final norm saves (the last block's output is counted apart)
_HEAD_NORM = {"llama": {"fp32": 8, "autocast": 6, "policy": 8}, "neox": {"fp32": 4, "autocast": 2, "policy": 6}}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training step."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    micro_batch: int  # items (sequences or images) per forward on this device

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def computes_in_bf16(spec: RunSpec, device_type: str) -> bool:
    """precision bf16, or auto on a GPU (the training loop's rule)."""
    return spec.train.precision == "bf16" or (spec.train.precision == "auto" and device_type == "cuda")


def micro_batch_per_device(spec: RunSpec, devices: int) -> int:
    """train.micro_batch_size, else this device's share of the global batch."""
    from wsdlab.train.batching import global_batch_size

    if spec.train.micro_batch_size:
        return spec.train.micro_batch_size
    per_item = 1 if spec.data.is_vision else spec.data.seq_len
    return -(-global_batch_size(spec.train, per_item) // devices)


def _param_split(cfg: LMConfig) -> tuple[int, int, int]:
    """(N_blk, N_root, N_mm) of a language model."""
    from wsdlab.models import num_parameters

    d = cfg.d_model
    n = num_parameters(cfg)
    if isinstance(cfg, NeoXConfig):
        norm_blk, norm_root = 4 * d, 2 * d
    else:
        norm_blk, norm_root = 2 * d, d
    root = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2) + norm_root
    blk = (n - root) // cfg.n_layers
    mm = cfg.n_layers * (blk - norm_blk) + cfg.vocab_size * d
    return blk, n - cfg.n_layers * blk, mm


def block_activation_bytes(cfg: LMConfig, mode: Mode) -> float:
    """Bytes per token one block saves for backward; mode "fp32", "autocast" (bf16) or "policy" (bf16 FSDP)."""
    d, f, h, hd = cfg.d_model, cfg.ffn_dim, cfg.n_heads, cfg.attn_head_dim
    a = 4 if mode == "fp32" else 2
    if isinstance(cfg, LlamaConfig):
        per_d = {"fp32": 24, "autocast": 26, "policy": 20}[mode]
        return per_d * d + 4 * a * h * hd + 4 * h + 4 * a * f + 8
    assert isinstance(cfg, NeoXConfig)
    per_d = {"fp32": 12, "autocast": 8, "policy": 14}[mode]
    if not cfg.parallel_residual:
        per_d += 2 if mode == "policy" else 4
    return per_d * d + 7 * a * h * hd + 4 * h + 2 * a * f + 16


def _head_bytes(cfg: LMConfig, mode: Mode) -> float:
    """Per token: the last block's output, the final norm's saved tensors, the logits (12 V)."""
    stream = 2 if mode == "policy" else 4
    return (stream + _HEAD_NORM[cfg.arch][mode]) * cfg.d_model + 12 * cfg.vocab_size


def _cnn_activation_bytes(cfg: CNNConfig) -> float:
    widths, side, total = [cfg.in_channels, *cfg.channels], cfg.image_size, 0.0
    for c_in, c_out in zip(widths, widths[1:]):
        total += 4 * (c_in * side**2 + 2 * c_out * side**2 + 2 * c_out * side**2 / 4)
        side //= 2
    return total


def estimate_memory(spec: RunSpec, devices: int = 1, device_type: str = "cuda") -> MemoryEstimate:
    """Bytes per device of one training step of `spec` on `devices` devices of `device_type` ("cuda" / "cpu").

    FSDP (train.fsdp) shards the state over `devices`; otherwise each device holds all of it (DDP when
    devices > 1). The formula is the module docstring's.
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    from wsdlab.models import num_parameters

    cfg = spec.model
    n = num_parameters(cfg)
    bf16 = computes_in_bf16(spec, device_type)
    fsdp = spec.train.fsdp and devices > 1
    policy = fsdp and bf16
    mode: Mode = "policy" if policy else "autocast" if bf16 else "fp32"
    micro = micro_batch_per_device(spec, devices)
    if isinstance(cfg, LMConfig):
        blk, root, mm = _param_split(cfg)
        tokens = micro * spec.data.seq_len
        one_block = block_activation_bytes(cfg, mode)
        stream = 2 if policy else 4
        layers = (cfg.n_layers * stream * cfg.d_model + one_block if spec.train.activation_checkpointing
                  else cfg.n_layers * one_block)
        activations = tokens * (layers + _head_bytes(cfg, mode))
    else:
        blk, root, mm = 0, n, n
        activations = micro * _cnn_activation_bytes(cfg)
    autocast_copies = 2 * mm if (bf16 and not policy) else 0
    if fsdp:
        unsharded = 2 if policy else 4
        weights = 4 * n / devices + unsharded * (root + 2 * blk) + autocast_copies
        gradients = 4 * n / devices + unsharded * root + (6 if policy else 4) * blk
        optimizer = 8 * n / devices
    else:
        weights = 4 * n + autocast_copies
        gradients = 4 * n * (2 if devices > 1 else 1)
        optimizer = 8 * n
    return MemoryEstimate(weights=round(weights), gradients=round(gradients), optimizer=round(optimizer),
                          activations=round(activations), micro_batch=micro)
