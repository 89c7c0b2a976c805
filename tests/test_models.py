"""wsdlab.models: presets and parameter counts, shapes, causality, RoPE, GQA, loss, double backward, CNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pydantic import TypeAdapter, ValidationError

from wsdlab.models import (
    PRESETS,
    CNNConfig,
    LlamaConfig,
    LMConfig,
    ModelConfig,
    NeoXConfig,
    batch_loss,
    build_model,
    flops_per_token,
    model_config,
    num_parameters,
)
from wsdlab.models.attention import causal_attention
from wsdlab.models.llama import RMSNorm
from wsdlab.models.rope import apply_rope, rope_tables, rotary_dim

LMS = ["llama", "neox"]


def small_lm(arch: str, **kw: object) -> LMConfig:
    base: dict[str, object] = dict(vocab_size=64, seq_len=16, d_model=32, n_layers=2, n_heads=4, ffn_dim=48)
    if arch == "neox":
        base.update(rotary_pct=0.25, bias=True, parallel_residual=True)
    else:
        base.update(n_kv_heads=2)
    base.update(kw)
    return {"llama": LlamaConfig, "neox": NeoXConfig}[arch](**base)


def seeded(cfg: LMConfig | CNNConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg).eval()


# ---------------------------------------------------------------- parameter counts


def llama_count(v: int, d: int, L: int, h: int, kv: int, hd: int, f: int, tied: bool) -> tuple[int, int]:
    """(total, non-embedding) written out: embeddings, per layer wq wk wv wo + w1 w2 w3 + 2 norms, final norm."""
    per_layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f + 2 * d
    non_embedding = L * per_layer + d
    return non_embedding + v * d * (1 if tied else 2), non_embedding


EXPECTED = {
    "tiny": llama_count(4096, 128, 4, 4, 2, 32, 384, tied=False),
    "micro": llama_count(32, 8, 1, 2, 1, 4, 16, tied=False),
    "60M": llama_count(50304, 512, 10, 8, 8, 64, 1536, tied=True),
    "210M": llama_count(50304, 768, 24, 12, 12, 64, 2048, tied=True),
    "1B": llama_count(128256, 2048, 16, 32, 8, 64, 8192, tied=True),
    "8B": llama_count(128256, 4096, 32, 32, 8, 128, 14336, tied=False),
    # neox: qkv (w+b), dense (w+b), h->4h (w+b), 4h->h (w+b), 2 LayerNorms (w+b) per layer; final LN
    "pythia-160m": (
        50304 * 768 * 2 + 12 * (768 * 2304 + 2304 + 768 * 768 + 768 + 768 * 3072 + 3072 + 3072 * 768 + 768 + 4 * 768) + 2 * 768,
        12 * (768 * 2304 + 2304 + 768 * 768 + 768 + 768 * 3072 + 3072 + 3072 * 768 + 768 + 4 * 768) + 2 * 768,
    ),
    # cnn: 3x3 kernels + biases: 3->32->128->128->128, then linear 128->10
    "cnn": (3 * 32 * 9 + 32 + 32 * 128 * 9 + 128 + 2 * (128 * 128 * 9 + 128) + 128 * 10 + 10,) * 2,
    "cnn-fmnist": (1 * 32 * 9 + 32 + 32 * 128 * 9 + 128 + 2 * (128 * 128 * 9 + 128) + 128 * 10 + 10,) * 2,
}


def test_every_preset_has_an_expected_count() -> None:
    assert set(PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_parameter_counts(name: str) -> None:
    cfg = model_config(name)
    total, non_embedding = EXPECTED[name]
    assert num_parameters(cfg) == total
    assert num_parameters(cfg, exclude_embeddings=True) == non_embedding
    device = "cpu" if name in ("tiny", "micro", "cnn", "cnn-fmnist") else "meta"
    with torch.device(device):
        model = build_model(cfg)
    assert num_parameters(model) == total


def test_published_counts() -> None:
    assert num_parameters(PRESETS["1B"]) == 1_235_814_400  # Llama-3.2-1B
    assert num_parameters(PRESETS["8B"]) == 8_030_261_248  # Llama-3.1-8B
    assert num_parameters(PRESETS["pythia-160m"]) == 162_322_944  # Pythia-160M
    assert num_parameters(PRESETS["cnn"]) == 334_346
    assert abs(num_parameters(PRESETS["60M"]) / 60e6 - 1) < 0.01
    assert abs(num_parameters(PRESETS["210M"]) / 210e6 - 1) < 0.01
    assert num_parameters(PRESETS["micro"]) <= 4096


@pytest.mark.parametrize("arch", LMS)
def test_count_formula_matches_module_off_preset(arch: str) -> None:
    family = [{"n_kv_heads": 1}] if arch == "llama" else [{"bias": False}, {"parallel_residual": False}]
    for kw in ({"tie_embeddings": True}, {"head_dim": 12, "n_heads": 4}, {"n_layers": 3}, *family):
        cfg = small_lm(arch, **kw)
        assert num_parameters(cfg) == num_parameters(build_model(cfg)), kw


def test_flops_per_token_hand_computed() -> None:
    cfg = small_lm("llama")  # v64 d32 L2 H4 kv2 hd8 f48 T16, untied
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 48 + 2 * 32
    n = 2 * per_layer + 32 + 64 * 32  # non-embedding + head
    assert flops_per_token(cfg) == 6 * n + 12 * 2 * 4 * 8 * 16
    tied = small_lm("llama", tie_embeddings=True)
    assert flops_per_token(tied) == flops_per_token(cfg)  # the tied head is still a matmul
    cnn = PRESETS["cnn"]
    macs = 32 * 32 * 32 * 3 * 9 + 16 * 16 * 128 * 32 * 9 + 8 * 8 * 128 * 128 * 9 + 4 * 4 * 128 * 128 * 9 + 128 * 10
    assert flops_per_token(cnn) == 6 * macs


# ---------------------------------------------------------------- presets and config errors


def test_model_config_overrides_and_errors() -> None:
    cfg = model_config("tiny", n_layers=2)
    assert cfg.n_layers == 2 and cfg.d_model == 128 and cfg.preset == "tiny"
    assert PRESETS["tiny"].n_layers == 4  # the preset itself is untouched
    with pytest.raises(ValueError, match="tiny.*micro.*pythia-160m.*cnn-fmnist"):
        model_config("tinyy")
    with pytest.raises(ValueError, match="model.d_modle"):
        model_config("tiny", d_modle=64)
    with pytest.raises(ValueError, match="n_kv_heads"):
        model_config("tiny", n_kv_heads=3)
    with pytest.raises(ValueError, match="n_heads"):
        model_config("tiny", n_heads=3)
    with pytest.raises(ValueError, match="n_kv_heads"):
        model_config("pythia-160m", n_kv_heads=4)


MODEL = TypeAdapter(ModelConfig)


def test_each_family_has_only_the_fields_its_model_reads() -> None:
    assert {type(cfg) for cfg in PRESETS.values()} == {LlamaConfig, NeoXConfig, CNNConfig}
    assert {n for n, cfg in PRESETS.items() if isinstance(cfg, LMConfig)} == set(PRESETS) - {"cnn", "cnn-fmnist"}
    assert not {"bias", "parallel_residual", "rotary_pct"} & set(LlamaConfig.model_fields)
    assert "n_kv_heads" not in NeoXConfig.model_fields
    assert not {"vocab_size", "seq_len", "d_model"} & set(CNNConfig.model_fields)
    for preset, field, owner in [("tiny", "bias", "neox"), ("tiny", "channels", "cnn"), ("cnn", "vocab_size", "llama, neox")]:
        with pytest.raises(ValueError, match=f"model.{field}: not a field of arch '{PRESETS[preset].arch}' \\(only of {owner}\\)"):
            model_config(preset, **{field: PRESETS[preset].model_dump().get(field, 1) or 1})


def test_model_config_union_picks_the_family_by_arch() -> None:
    assert MODEL.validate_python({"arch": "neox", "rotary_pct": 0.25}) == NeoXConfig(rotary_pct=0.25)
    assert MODEL.validate_python({"d_model": 64}) == LlamaConfig(d_model=64)  # arch defaults to llama
    assert isinstance(MODEL.validate_python({"arch": "cnn", "in_channels": 1}), CNNConfig)
    with pytest.raises(ValidationError) as err:
        MODEL.validate_python({"arch": "cnn", "seq_len": 16, "channels": []})
    assert sorted(e["loc"] for e in err.value.errors()) == [("channels",), ("seq_len",)]  # no union tag in the path
    with pytest.raises(ValidationError) as err:
        MODEL.validate_python({"arch": "gpt2"})
    assert err.value.errors()[0]["loc"] == ("arch",)


def test_old_single_config_dumps_still_load() -> None:
    """A spec.yaml written by the one-class ModelConfig held every family's fields; those a model never read are dropped."""
    cnn_fields = {"in_channels": 3, "image_size": 32, "num_classes": 10, "channels": [32, 128, 128, 128]}
    lm_fields = {"vocab_size": 50304, "seq_len": 512, "d_model": 512, "n_layers": 10, "n_heads": 8, "n_kv_heads": None,
                 "head_dim": None, "ffn_dim": 1536, "rope_theta": 10000.0, "norm_eps": 1e-5, "tie_embeddings": False,
                 "rotary_pct": 1.0, "parallel_residual": False, "bias": False}
    old_llama = {"arch": "llama", "preset": "tiny", **PRESETS["tiny"].model_dump(), **{"rotary_pct": 1.0,
                 "parallel_residual": False, "bias": False}, **cnn_fields}
    assert MODEL.validate_python(old_llama) == PRESETS["tiny"]
    old_neox = {**lm_fields, **PRESETS["pythia-160m"].model_dump(), **cnn_fields}
    assert MODEL.validate_python(old_neox) == PRESETS["pythia-160m"]
    old_cnn = {**lm_fields, **PRESETS["cnn"].model_dump()}
    assert MODEL.validate_python(old_cnn) == PRESETS["cnn"]
    with pytest.raises(ValidationError, match="rotary_pct"):  # the old Llama read it: not dropped silently
        MODEL.validate_python({**old_llama, "rotary_pct": 0.5})
    with pytest.raises(ValidationError, match="n_kv_heads"):
        MODEL.validate_python({**old_neox, "n_kv_heads": 4})


def test_input_longer_than_seq_len_is_rejected() -> None:
    model = seeded(PRESETS["micro"])
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


# ---------------------------------------------------------------- language models


@pytest.mark.parametrize("arch", LMS)
def test_forward_shapes_and_hidden_states(arch: str) -> None:
    cfg = small_lm(arch)
    model = seeded(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, cfg.vocab_size)
    states = model.hidden_states(idx)
    assert len(states) == cfg.n_layers + 1
    assert all(h.shape == (3, 10, cfg.d_model) for h in states)
    assert torch.equal(states[0], model.get_submodule("tok_embeddings" if arch == "llama" else "embed_in")(idx))
    torch.testing.assert_close(model.head(states[-1]), logits)
    assert not torch.allclose(states[1], states[2])


@pytest.mark.parametrize("arch", LMS)
def test_causality(arch: str) -> None:
    cfg = small_lm(arch)
    model = seeded(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    t = 7
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % cfg.vocab_size
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t])
    assert (a[:, t:] - b[:, t:]).abs().amax(dim=-1).min() > 1e-6  # every later position sees the change


def test_gqa_equals_mha_with_repeated_kv_weights() -> None:
    gqa_cfg = small_lm("llama", n_heads=4, n_kv_heads=2)
    mha_cfg = small_lm("llama", n_heads=4, n_kv_heads=4)
    gqa, mha = seeded(gqa_cfg), seeded(mha_cfg, seed=1)
    hd, rep = gqa_cfg.attn_head_dim, 2
    state = {}
    for name, w in gqa.state_dict().items():
        if name.endswith(("attention.wk.weight", "attention.wv.weight")):
            w = w.view(gqa_cfg.kv_heads, hd, -1).repeat_interleave(rep, dim=0).reshape(-1, w.shape[1])
        state[name] = w
    mha.load_state_dict(state)
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(mha(idx), gqa(idx))


def test_causal_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    b, h, kv, t, hd = 2, 4, 2, 6, 8
    q, k, v = torch.randn(b, h, t, hd), torch.randn(b, kv, t, hd), torch.randn(b, kv, t, hd)
    out = causal_attention(q, k, v)
    ref = torch.zeros_like(out)
    for head in range(h):
        kh, vh = k[:, head // (h // kv)], v[:, head // (h // kv)]
        for i in range(t):
            scores = torch.einsum("bd,bjd->bj", q[:, head, i], kh[:, : i + 1]) / math.sqrt(hd)
            ref[:, head, i] = torch.einsum("bj,bjd->bd", scores.softmax(-1), vh[:, : i + 1])
    torch.testing.assert_close(out, ref)


def slow_rope(x: torch.Tensor, rot_dim: int, theta: float) -> torch.Tensor:
    """Rotate each pair (i, i + rot_dim/2) at position m by the angle m * theta^(-2i/rot_dim), one 2x2 matrix at a time."""
    out = x.clone()
    half = rot_dim // 2
    for m in range(x.shape[-2]):
        for i in range(half):
            a = m * theta ** (-2 * i / rot_dim)
            x1, x2 = x[..., m, i], x[..., m, i + half]
            out[..., m, i] = x1 * math.cos(a) - x2 * math.sin(a)
            out[..., m, i + half] = x1 * math.sin(a) + x2 * math.cos(a)
    return out


@pytest.mark.parametrize("rot_dim", [8, 4])
def test_rope_matches_slow_rotation(rot_dim: int) -> None:
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    cos, sin = rope_tables(rot_dim, 5, 100.0)
    got = apply_rope(x, cos.double(), sin.double())
    torch.testing.assert_close(got, slow_rope(x, rot_dim, 100.0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[..., rot_dim:], x[..., rot_dim:])  # partial rotary passes the rest through


def test_rope_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    cos, sin = rope_tables(16, 32, 10000.0)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q.expand(1, 1, 32, 16), cos, sin)[0, 0, m]
        kn = apply_rope(k.expand(1, 1, 32, 16), cos, sin)[0, 0, n]
        return float(qm @ kn)

    for m, n, shift in [(5, 2, 7), (9, 9, 13), (3, 10, 20)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), rel=1e-4, abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)
    assert rotary_dim(64, 0.25) == 16


def test_rmsnorm_formula() -> None:
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 6)
    expected = torch.stack([row / math.sqrt(float((row**2).mean()) + 1e-5) for row in x]) * torch.arange(1.0, 7.0)
    torch.testing.assert_close(norm(x), expected)


def test_init_and_tied_embeddings() -> None:
    cfg = model_config("tiny")
    model = seeded(cfg)
    out_std = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert model.layers[0].attention.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.layers[0].feed_forward.w2.weight.std().item() == pytest.approx(out_std, rel=0.05)
    assert model.layers[0].attention.wo.weight.std().item() == pytest.approx(out_std, rel=0.1)
    assert "rope_cos" not in model.state_dict()  # derived from the config, not saved
    tied = seeded(small_lm("llama", tie_embeddings=True))
    assert tied.output.weight is tied.tok_embeddings.weight
    neox = seeded(small_lm("neox", tie_embeddings=True))
    assert neox.embed_out.weight is neox.embed_in.weight
    assert model.output.weight is not model.tok_embeddings.weight


@pytest.mark.parametrize("arch", LMS)
def test_meta_build_then_init_weights(arch: str) -> None:
    cfg = small_lm(arch)
    ref = seeded(cfg)
    with torch.device("meta"):
        model = build_model(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    model.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(model(idx), ref(idx))


@pytest.mark.parametrize("arch", LMS)
def test_compiles_without_graph_breaks(arch: str) -> None:
    cfg = small_lm(arch)
    model = seeded(cfg)
    batch = torch.randint(0, 64, (2, 9))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = batch_loss(compiled, batch)
    torch.testing.assert_close(loss, batch_loss(model, batch))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_cpu_bf16_autocast_gives_fp32_loss() -> None:
    model = seeded(small_lm("llama"))
    batch = torch.randint(0, 64, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = batch_loss(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(batch_loss(model, batch).item(), rel=0.05)


# ---------------------------------------------------------------- loss


def test_batch_loss_lm_equals_manual_cross_entropy() -> None:
    model = seeded(small_lm("neox"))
    batch = torch.randint(0, 64, (3, 9))
    logits = model(batch[:, :-1])
    manual = torch.zeros(3, 8)
    for b in range(3):
        for t in range(8):
            row = logits[b, t]
            manual[b, t] = torch.logsumexp(row, 0) - row[batch[b, t + 1]]
    per_token = batch_loss(model, batch, reduction="none")
    assert per_token.shape == (3, 8)
    torch.testing.assert_close(per_token, manual)
    torch.testing.assert_close(batch_loss(model, batch), manual.mean())
    torch.testing.assert_close(batch_loss(model, batch, reduction="sum"), manual.sum())
    with pytest.raises(ValueError, match="reduction"):
        batch_loss(model, batch, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="B, T\\+1"):
        batch_loss(model, batch[:, :1])


def test_batch_loss_vision_equals_manual_cross_entropy() -> None:
    model = seeded(PRESETS["cnn-fmnist"])
    images, labels = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 9, 3])
    logits = model(images)
    manual = torch.stack([torch.logsumexp(logits[i], 0) - logits[i, labels[i]] for i in range(4)])
    per_image = batch_loss(model, (images, labels), reduction="none")
    assert per_image.shape == (4,)
    torch.testing.assert_close(per_image, manual)
    torch.testing.assert_close(batch_loss(model, (images, labels)), manual.mean())


# ---------------------------------------------------------------- double backward (Hessian-vector products)


def _grad(model: torch.nn.Module, batch: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(batch_loss(model, batch), list(model.parameters()), create_graph=create_graph)


def test_micro_hvp_matches_finite_differences() -> None:
    model = seeded(PRESETS["micro"]).double()
    batch = torch.randint(0, 32, (4, 17))
    params = list(model.parameters())
    torch.manual_seed(1)
    v = [torch.randn_like(p) for p in params]
    norm = torch.sqrt(sum((vi**2).sum() for vi in v))
    v = [vi / norm for vi in v]  # unit direction: central-difference error ~ eps^2 |v|^3
    with sdpa_kernel(SDPBackend.MATH):
        grads = _grad(model, batch, create_graph=True)
        hv = torch.autograd.grad(sum((g * vi).sum() for g, vi in zip(grads, v)), params)
        eps = 1e-5
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.add_(eps * vi)
        g_plus = _grad(model, batch)
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.sub_(2 * eps * vi)
        g_minus = _grad(model, batch)
    fd = [(a - b) / (2 * eps) for a, b in zip(g_plus, g_minus)]
    hv_flat, fd_flat = torch.cat([h.flatten() for h in hv]), torch.cat([f.flatten() for f in fd])
    assert torch.isfinite(hv_flat).all() and hv_flat.norm() > 1e-2
    torch.testing.assert_close(hv_flat, fd_flat, rtol=1e-6, atol=1e-8)


def test_micro_full_hessian_is_symmetric_and_diagonalisable() -> None:
    model = seeded(PRESETS["micro"]).double()
    batch = torch.randint(0, 32, (2, 17))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(theta, sizes)
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return batch_loss(lambda idx: torch.func.functional_call(model, params, (idx,)), batch)

    with sdpa_kernel(SDPBackend.MATH):
        hessian = torch.func.jacrev(torch.func.jacrev(loss_of))(flat)  # reverse-over-reverse, as HVPs do
    n = num_parameters(model)
    assert hessian.shape == (n, n)
    torch.testing.assert_close(hessian, hessian.T, rtol=1e-8, atol=1e-10)
    eig = torch.linalg.eigvalsh(hessian)
    assert torch.isfinite(eig).all() and eig[-1] > 0


# ---------------------------------------------------------------- CNN


def test_cnn_shapes() -> None:
    cifar, fmnist = seeded(PRESETS["cnn"]), seeded(PRESETS["cnn-fmnist"])
    assert cifar(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    assert fmnist(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert cifar.features(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert len(cifar.convs) == 4 and cifar.convs[1].weight.shape == (128, 32, 3, 3)


class PaperCNN(torch.nn.Module):
    """Paper 001, App. A, `CIFARCNN2`, as printed (its `self.fcl` typo read as `self.fc1`)."""

    def __init__(self) -> None:
        super().__init__()
        nn, F = torch.nn, torch.nn.functional
        self.F = F
        self.pool = nn.MaxPool2d(2, 2)
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 128, 3, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, padding=1)
        self.fc1 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F = self.F
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = self.pool(F.relu(self.conv4(x)))
        x = x.mean(dim=[2, 3])
        return self.fc1(x)


def test_cnn_is_the_papers_appendix_a_code() -> None:
    """Same parameter count (334K: "a small CNN with around 334K parameters") and the same function
    once the paper's weights are copied in: four conv + ReLU + 2x2 max-pool stages, GAP, linear head."""
    torch.manual_seed(0)
    paper = PaperCNN().eval()
    ours = build_model(PRESETS["cnn"]).eval()
    assert num_parameters(ours) == sum(p.numel() for p in paper.parameters()) == 334_346
    with torch.no_grad():
        for conv, ref in zip(ours.convs, (paper.conv1, paper.conv2, paper.conv3, paper.conv4)):
            conv.weight.copy_(ref.weight)
            conv.bias.copy_(ref.bias)
        ours.fc.weight.copy_(paper.fc1.weight)
        ours.fc.bias.copy_(paper.fc1.bias)
        x = torch.randn(3, 3, 32, 32)
        torch.testing.assert_close(ours(x), paper(x))


# ---------------------------------------------------------------- GPU (device machine)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", LMS)
def test_gpu_bf16_autocast_compile(arch: str) -> None:
    cfg = small_lm(arch, d_model=64, seq_len=64)
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    batch = torch.randint(0, 64, (4, 65), device="cuda")
    ref = batch_loss(model, batch)
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = batch_loss(compiled, batch)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=0.02)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
