#!/usr/bin/env python3
"""Writes the Hugging Face reference files under tests/reference/hf/<name>/.

For each tiny config there (llama, mixtral, qwen2_moe) this script:
  1. exports the config's initial weights with our binary (moe_train CONFIG --export-hf=DIR),
  2. loads the export with transformers and checks that every tensor of the
     file, and nothing else, became a parameter (no missing, unexpected or
     newly initialised weights),
  3. copies config.json and model.safetensors (unchanged) next to the toml,
  4. computes in float64 the logits, the loss and every gradient for a fixed
     batch, and takes three torch.optim.AdamW steps on it,
  5. writes everything to reference.safetensors (all float32).

Run by hand (see README.md beside this file); CI does not run it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import inspect
import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[2]
REFERENCE_ROOT = REPO / "tests" / "reference" / "hf"
MODELS = ["llama", "mixtral", "qwen2_moe"]
# Chosen so that, in every MoE layer and at each of the three steps, every expert receives a token and
# no token's k-th and (k+1)-th router probabilities are closer than MIN_ROUTER_MARGIN (both checked).
# An expert that no token picks has a router row whose gradient is exactly 0 in exact arithmetic
# (the top-k renormalisation cancels the softmax denominator) but rounding noise in practice, and
# AdamW turns noise of ~1e-8 into steps of ~lr: such a row would compare nothing useful.
TOKEN_SEED = 193
ADAMW_STEPS = 3
FP32_LOSS_RTOL = 1e-5
MIN_ROUTER_MARGIN = 1e-3


def fail(msg: str) -> None:
    raise SystemExit(f"make_references: {msg}")


# ---------------------------------------------------------------------------
# Float64 throughout.
#
# transformers computes a few things in float32 whatever the model's dtype:
# RMSNorm's normalisation, RoPE's cos/sin (and the inverse frequencies), the
# eager attention softmax and the MoE router softmax. For a float64 reference
# those casts are replaced, while the references are computed, by a cast to
# promote_types(dtype, float32): float64 stays float64, and a float32 or bf16
# model computes exactly as before. Each replaced line must appear once in the
# pinned transformers' source, or the script stops. A dispatch-level watch then
# confirms that no op of the float64 forward and backward produced a float32
# tensor.
# ---------------------------------------------------------------------------

_UPCAST = "_reference_upcast"


def _reference_upcast(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _float64_patches():
    """(module, owner, attribute, [(old, new), ...]) for every float32 cast on the path."""
    from transformers.models.llama import modeling_llama
    from transformers.models.mixtral import modeling_mixtral
    from transformers.models.qwen2_moe import modeling_qwen2_moe

    rms = [("hidden_states = hidden_states.to(torch.float32)", f"hidden_states = hidden_states.to({_UPCAST}(input_dtype))")]
    rope = [(
        "freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)",
        f"freqs = position_ids[..., None].to({_UPCAST}(x.dtype)) * self.inv_freq.to(device=x.device, dtype={_UPCAST}(x.dtype))",
    )]
    attn = [("softmax(attn_weights, dim=-1, dtype=torch.float32)", f"softmax(attn_weights, dim=-1, dtype={_UPCAST}(query.dtype))")]
    patches = []
    for mod, prefix in ((modeling_llama, "Llama"), (modeling_mixtral, "Mixtral"), (modeling_qwen2_moe, "Qwen2Moe")):
        patches.append((mod, getattr(mod, f"{prefix}RMSNorm"), "forward", rms))
        patches.append((mod, getattr(mod, f"{prefix}RotaryEmbedding"), "forward", rope))
        patches.append((mod, mod, "eager_attention_forward", attn))
    patches.append((modeling_mixtral, modeling_mixtral.MixtralTopKRouter, "forward", [(
        "softmax(router_logits.float(), dim=-1)", f"softmax(router_logits.to({_UPCAST}(router_logits.dtype)), dim=-1)")]))
    patches.append((modeling_qwen2_moe, modeling_qwen2_moe.Qwen2MoeTopKRouter, "forward", [(
        "softmax(router_logits, dtype=torch.float, dim=-1)",
        f"softmax(router_logits, dtype={_UPCAST}(router_logits.dtype), dim=-1)")]))
    return patches


@contextlib.contextmanager
def float64_throughout():
    saved = []
    try:
        for mod, owner, attr, replacements in _float64_patches():
            original = owner.__dict__[attr]
            src = textwrap.dedent(inspect.getsource(original))
            for old, new in replacements:
                if src.count(old) != 1:
                    fail(f"{mod.__name__}.{getattr(owner, '__name__', '')}.{attr}: expected the line {old!r} once in "
                         f"transformers {transformers.__version__}; the float64 patch needs updating")
                src = src.replace(old, new)
            setattr(mod, _UPCAST, _reference_upcast)
            namespace: dict = {}
            exec(compile(src, f"<float64 {mod.__name__}.{attr}>", "exec"), mod.__dict__, namespace)
            saved.append((owner, attr, original))
            setattr(owner, attr, namespace[original.__name__])
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def float64_inv_freq(model: torch.nn.Module) -> None:
    """Recomputes every default RoPE's inverse frequencies in float64 (transformers makes them in float32)."""
    cfg = model.config
    base = cfg.rope_parameters["rope_theta"]
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    n = 0
    for m in model.modules():
        if hasattr(m, "inv_freq") and hasattr(m, "rope_type"):
            if m.rope_type != "default" or getattr(m, "attention_scaling", 1.0) != 1.0:
                fail(f"unexpected RoPE type {m.rope_type!r}")
            if not torch.allclose(m.inv_freq.double(), inv, rtol=1e-6, atol=0):
                fail("transformers' RoPE inverse frequencies differ from 1 / theta^(2i/head_dim)")
            m.inv_freq = inv.clone()
            m.original_inv_freq = inv.clone()
            n += 1
    if n == 0:
        fail("no rotary embedding module found")


class LowPrecisionWatch(TorchDispatchMode):
    """Counts ops whose output has a floating dtype other than float64."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                self.ops[f"{func} -> {t.dtype}"] += 1
        return out


# ---------------------------------------------------------------------------
# On-disk names <-> transformers' in-memory parameters.
# transformers 5 keeps the experts of a block fused ([E, 2F, D] gate_up_proj =
# per expert cat(gate, up) along dim 0, and [E, D, F] down_proj) and Mixtral's
# block under `mlp.`; the files keep one [F, D] / [D, F] tensor per expert.
# ---------------------------------------------------------------------------

EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2"), "qwen2_moe": ("gate_proj", "up_proj", "down_proj")}


def to_disk(model_type: str, name: str, t: torch.Tensor, disk_shapes: dict) -> dict:
    """The on-disk tensors that the in-memory tensor `name` holds."""
    if name in disk_shapes:
        if list(t.shape) != disk_shapes[name]:
            fail(f"{name}: shape {list(t.shape)} in memory, {disk_shapes[name]} on disk")
        return {name: t}
    block_on_disk = ".block_sparse_moe." if model_type == "mixtral" else ".mlp."
    m = re.fullmatch(r"(model\.layers\.\d+)\.mlp\.gate\.weight", name)
    if m and model_type == "mixtral":
        return to_disk(model_type, m.group(1) + block_on_disk + "gate.weight", t, disk_shapes)
    m = re.fullmatch(r"(model\.layers\.\d+)\.mlp\.experts\.(gate_up_proj|down_proj)", name)
    if m and model_type in EXPERT_NAMES:
        gate, up, down = EXPERT_NAMES[model_type]
        prefix = m.group(1) + block_on_disk + "experts."
        out = {}
        for e in range(t.shape[0]):
            if m.group(2) == "gate_up_proj":
                f = t.shape[1] // 2
                out.update(to_disk(model_type, f"{prefix}{e}.{gate}.weight", t[e, :f], disk_shapes))
                out.update(to_disk(model_type, f"{prefix}{e}.{up}.weight", t[e, f:], disk_shapes))
            else:
                out.update(to_disk(model_type, f"{prefix}{e}.{down}.weight", t[e], disk_shapes))
        return out
    fail(f"in-memory parameter {name} has no on-disk counterpart")


def frozen(model_type: str, name: str) -> bool:
    """Qwen2-MoE tensors that our model lacks: q/k/v biases and the shared expert (all exact zeros or unused)."""
    if model_type != "qwen2_moe":
        return False
    return bool(re.search(r"\.self_attn\.[qkv]_proj\.bias$|\.mlp\.shared_expert\.|\.mlp\.shared_expert_gate\.", name))


# ---------------------------------------------------------------------------


def export(binary: Path, toml_path: Path, out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="moe_ref_run_") as scratch:
        r = subprocess.run([str(binary), str(toml_path), f"--export-hf={out_dir}"], cwd=scratch,
                           capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"export of {toml_path} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    for f in ("config.json", "model.safetensors"):
        if not (out_dir / f).is_file():
            fail(f"export of {toml_path} wrote no {f}:\n{r.stdout}{r.stderr}")


def load(export_dir: Path, dtype: torch.dtype):
    model, info = AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=dtype, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            fail(f"transformers loaded {export_dir} with {key}: {sorted(info[key])}")
    model.eval()  # no dropout anywhere; gradients are unaffected
    return model


def check_config(model, name: str, cfg_json: dict, toml: dict) -> None:
    c = model.config
    m = toml["model"]
    want = {
        "hidden_size": m["dim"], "num_hidden_layers": m["n_layers"], "num_attention_heads": m["n_heads"],
        "num_key_value_heads": m.get("n_kv_heads", m["n_heads"]), "vocab_size": m["vocab_size"],
        "rms_norm_eps": cfg_json["rms_norm_eps"], "tie_word_embeddings": False, "head_dim": cfg_json["head_dim"],
    }
    for k, v in want.items():
        if getattr(c, k, None) != v:
            fail(f"{name}: transformers' config.{k} = {getattr(c, k, None)!r}, expected {v!r}")
    if c.rope_parameters.get("rope_type") != "default" or c.rope_parameters.get("rope_theta") != cfg_json["rope_theta"]:
        fail(f"{name}: transformers' rope_parameters = {c.rope_parameters}, expected theta {cfg_json['rope_theta']}")
    if c.model_type == "mixtral":
        if c.sliding_window is not None or c.router_jitter_noise != 0 or c.num_experts_per_tok != m["moe_top_k"]:
            fail(f"{name}: sliding_window={c.sliding_window} router_jitter_noise={c.router_jitter_noise} "
                 f"top_k={c.num_experts_per_tok}")
    if c.model_type == "qwen2_moe":
        if not c.norm_topk_prob or c.use_sliding_window or any(t != "full_attention" for t in c.layer_types):
            fail(f"{name}: norm_topk_prob={c.norm_topk_prob} use_sliding_window={c.use_sliding_window} "
                 f"layer_types={c.layer_types}")
        if c.decoder_sparse_step != m["moe_frequency"] or c.mlp_only_layers or c.num_experts_per_tok != m["moe_top_k"]:
            fail(f"{name}: decoder_sparse_step={c.decoder_sparse_step} mlp_only_layers={c.mlp_only_layers}")


def disk_view(model, model_type: str, disk: dict) -> dict:
    """Every in-memory parameter as on-disk tensors; checks the set of names equals the file's."""
    shapes = {k: list(v.shape) for k, v in disk.items()}
    out = {}
    for n, p in model.named_parameters():
        for k, v in to_disk(model_type, n, p, shapes).items():
            if k in out:
                fail(f"{k} produced twice")
            out[k] = v
    if set(out) != set(disk):
        fail(f"parameters vs file: missing {sorted(set(disk) - set(out))}, extra {sorted(set(out) - set(disk))}")
    return out


def save_reproducibly(tensors: dict, path: Path, metadata: dict) -> None:
    """safetensors.torch.save_file, with the header's metadata in sorted order (safetensors writes it in hash
    order, which changes from run to run) so that an unchanged reference is written byte for byte again."""
    data = safetensors.torch.save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    back = safetensors.torch.load_file(path)
    if back.keys() != tensors.keys() or not all(torch.equal(back[k], tensors[k]) for k in tensors):
        fail(f"{path} does not read back")


def forward_loss(model, tokens: torch.Tensor):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return logits, loss


def router_margins(model):
    """Hooks every MoE router; returns (list that fills with (smallest top-k margin, fewest tokens an
    expert received) per call, handles)."""
    margins, handles = [], []
    for mod in model.modules():
        if type(mod).__name__.endswith("TopKRouter"):
            k = mod.top_k

            def hook(_m, _inp, out, k=k, n=mod.num_experts):
                p = torch.softmax(out[0].detach().double(), dim=-1).sort(dim=-1, descending=True).values
                load = torch.bincount(out[2].flatten(), minlength=n)
                margins.append((float((p[:, k - 1] - p[:, k]).min()), int(load.min())))

            handles.append(mod.register_forward_hook(hook))
    return margins, handles


def make_one(name: str, binary: Path, keep_export: Path | None) -> dict:
    folder = REFERENCE_ROOT / name
    toml_path = folder / "moe_train.toml"
    toml = tomllib.loads(toml_path.read_text())
    B, T, V = toml["train"]["batch_size"], toml["train"]["seq_len"], toml["model"]["vocab_size"]
    opt = toml["optimizer"]

    with tempfile.TemporaryDirectory(prefix="moe_ref_export_") as tmp:
        export_dir = Path(tmp) / "hf"
        export(binary, toml_path.resolve(), export_dir)
        if keep_export:
            shutil.copytree(export_dir, keep_export / name, dirs_exist_ok=True)
        cfg_json = json.loads((export_dir / "config.json").read_text())
        model_type = cfg_json["model_type"]
        disk = safetensors.torch.load_file(export_dir / "model.safetensors")
        for k, v in disk.items():
            if v.dtype != torch.float32:
                fail(f"{name}: {k} is {v.dtype} in the export, expected float32")

        # (a) transformers loads the export exactly: every parameter comes from the file, bit for bit.
        model32 = load(export_dir, torch.float32)
        check_config(model32, name, cfg_json, toml)
        for k, v in disk_view(model32, model_type, disk).items():
            if not torch.equal(v.detach(), disk[k]):
                fail(f"{name}: {k} in memory differs from the file (conversion wrong or newly initialised)")
        model64 = load(export_dir, torch.float64)
        check_config(model64, name, cfg_json, toml)
        for k, v in disk_view(model64, model_type, disk).items():
            if not torch.equal(v.detach(), disk[k].double()):
                fail(f"{name}: {k} in memory (float64) differs from the file")

        # (b) the export itself, unchanged bytes.
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(export_dir / f, folder / f)

    # (c) the batch.
    g = torch.Generator().manual_seed(TOKEN_SEED)
    tokens = torch.randint(0, V, (B, T + 1), generator=g, dtype=torch.int64)

    # For comparison only: the float64 model as transformers ships it (float32 at the casts named above).
    with torch.no_grad():
        stock_logits64, stock_loss64 = forward_loss(model64, tokens)
    float64_inv_freq(model64)

    # Sanity: stock float32 transformers against the float64 reference (computed below).
    with torch.no_grad():
        logits32, loss32 = forward_loss(model32, tokens)

    # Qwen2-MoE: freeze what our model lacks; it must be zero (or unused) and stay so.
    frozen_names = [n for n, _ in model64.named_parameters() if frozen(model_type, n)]
    disk_shapes = {k: list(v.shape) for k, v in disk.items()}
    frozen_disk = set()
    for n, p in model64.named_parameters():
        if frozen(model_type, n):
            p.requires_grad_(False)
            frozen_disk.update(to_disk(model_type, n, p, disk_shapes))
            if p.abs().max() != 0:
                fail(f"{name}: {n} should be exported as zeros")
    shared_outputs = []
    if model_type == "qwen2_moe":
        if len(frozen_names) != 3 * cfg_json["num_hidden_layers"] + 4 * sum(
                isinstance(l.mlp, transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock)
                for l in model64.model.layers):
            fail(f"{name}: unexpected frozen set {frozen_names}")
        for layer in model64.model.layers:
            if hasattr(layer.mlp, "shared_expert"):
                layer.mlp.shared_expert.register_forward_hook(
                    lambda _m, _i, out: shared_outputs.append(float(out.detach().abs().max())))

    trainable = [(n, p) for n, p in model64.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"], foreach=False)

    margins, handles = router_margins(model64)
    watch = LowPrecisionWatch()
    losses, grads = [], None
    with float64_throughout():
        for step in range(ADAMW_STEPS):
            optimizer.zero_grad(set_to_none=True)
            if step == 0:
                with watch:
                    logits64, loss = forward_loss(model64, tokens)
                    loss.backward()
            else:
                _, loss = forward_loss(model64, tokens)
                loss.backward()
            losses.append(loss.item())
            for n, p in trainable:
                if p.grad is None:  # our optimizer decays every parameter each step, used or not
                    p.grad = torch.zeros_like(p)
            if step == 0:
                grads = {}
                for n, p in trainable:
                    grads.update(to_disk(model_type, n, p.grad.detach().clone(), disk_shapes))
                logits_ref, loss_ref = logits64.detach(), loss.detach()
            optimizer.step()
    for h in handles:
        h.remove()
    after = {}
    for n, p in trainable:
        after.update(to_disk(model_type, n, p.detach().clone(), disk_shapes))
    for n, p in model64.named_parameters():
        if not p.requires_grad and p.abs().max() != 0:
            fail(f"{name}: frozen {n} changed")

    if watch.ops:
        fail(f"{name}: ops below float64 in the reference pass: {dict(watch.ops)}")
    if set(grads) != set(disk) - frozen_disk or set(after) != set(grads):
        fail(f"{name}: trainable set mismatch")

    # Sanity checks.
    checks = {}
    checks["fp32_vs_fp64_loss_rel"] = abs(loss32.item() - loss_ref.item()) / abs(loss_ref.item())
    checks["fp32_vs_fp64_logits_maxabs"] = float((logits32.double() - logits_ref).abs().max())
    if checks["fp32_vs_fp64_loss_rel"] >= FP32_LOSS_RTOL:
        fail(f"{name}: float32 loss {loss32.item()} vs float64 {loss_ref.item()}: relative "
             f"{checks['fp32_vs_fp64_loss_rel']:.3g} >= {FP32_LOSS_RTOL}")
    checks["stock_fp64_vs_fp64_loss_rel"] = abs(stock_loss64.item() - loss_ref.item()) / abs(loss_ref.item())
    checks["stock_fp64_vs_fp64_logits_maxabs"] = float((stock_logits64 - logits_ref).abs().max())
    if margins:
        checks["min_router_margin"] = min(m for m, _ in margins)
        checks["min_expert_load"] = min(l for _, l in margins)
        if checks["min_router_margin"] < MIN_ROUTER_MARGIN:
            fail(f"{name}: a token's k-th and (k+1)-th router probabilities are {checks['min_router_margin']:.3g} "
                 f"apart; float32 could route it differently: change TOKEN_SEED")
        if checks["min_expert_load"] == 0:
            fail(f"{name}: an expert receives no token at some step: change TOKEN_SEED")
    if model_type == "qwen2_moe":
        if not shared_outputs or max(shared_outputs) != 0.0:
            fail(f"{name}: the shared expert's output is not exactly 0: {shared_outputs}")
        checks["shared_expert_max_abs_output"] = max(shared_outputs)
        checks["shared_expert_calls"] = len(shared_outputs)
        # The unused shared-expert tensors (zeros in the file) do not matter: randomise them, logits unchanged.
        with torch.no_grad(), float64_throughout():
            before = forward_loss(model64, tokens)[0]
            saved = {}
            gen = torch.Generator().manual_seed(1)
            for n, p in model64.named_parameters():
                if re.search(r"shared_expert\.(gate_proj|up_proj)\.|shared_expert_gate\.", n):
                    saved[n] = p.clone()
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            randomised = forward_loss(model64, tokens)[0]
            for n, p in model64.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        checks["shared_expert_randomised_logits_bitwise_equal"] = bool(torch.equal(before, randomised))
        if not checks["shared_expert_randomised_logits_bitwise_equal"]:
            fail(f"{name}: randomising the unused shared-expert tensors changed the logits")
    nonzero = torch.cat([g.abs().flatten() for g in grads.values()])
    nonzero = nonzero[nonzero > 0]
    checks["min_nonzero_abs_grad"] = float(nonzero.min())
    checks["grad_elements_below_1e-6"] = int((nonzero < 1e-6).sum())

    # (f) the file.
    out = {"tokens": tokens.to(torch.float32), "logits": logits_ref.to(torch.float32),
           "loss": loss_ref.reshape(1).to(torch.float32),
           "adamw.losses": torch.tensor(losses, dtype=torch.float64).to(torch.float32)}
    for k in sorted(grads):
        out[f"grad.{k}"] = grads[k].to(torch.float32).contiguous()
    for k in sorted(after):
        out[f"adamw.after3.{k}"] = after[k].to(torch.float32).contiguous()
    meta = {
        "model": name, "architecture": cfg_json["architectures"][0],
        "transformers": transformers.__version__, "torch": torch.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__,
        "token_seed": str(TOKEN_SEED), "batch_size": str(B), "seq_len": str(T),
        "adamw_steps": str(ADAMW_STEPS), "lr": repr(opt["lr"]), "weight_decay": repr(opt["weight_decay"]),
        "betas": json.dumps(opt["betas"]), "eps": repr(opt["eps"]),
        "weight_decay_rule": "tensors with 2+ dimensions; none on 1-D (norm weights)",
        "frozen": "q/k/v biases and the shared expert (Qwen2-MoE only; zeros, not trained)",
        "compute": "float64 throughout (transformers' float32 casts in RMSNorm, RoPE, attention and router "
                   "softmax promoted to float64); stored as float32",
        "loss_float64": repr(loss_ref.item()), "adamw_losses_float64": json.dumps(losses),
        "made_by": "dev/hf_reference/make_references.py",
    }
    ref_path = folder / "reference.safetensors"
    save_reproducibly(out, ref_path, meta)

    sizes = {f: (folder / f).stat().st_size for f in ("config.json", "model.safetensors", "reference.safetensors")}
    return {"name": name, "architecture": cfg_json["architectures"][0], "loss": loss_ref.item(),
            "loss_fp32": loss32.item(), "adamw_losses": losses,
            "max_abs_grad": float(max(g.abs().max() for g in grads.values())),
            "n_grad_tensors": len(grads), "n_frozen": len(frozen_disk), "sizes": sizes, "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=Path(os.environ.get("MOE_TRAIN_BIN", "bazel-bin/src/moe_train")),
                    help="our moe_train binary (default: $MOE_TRAIN_BIN, else bazel-bin/src/moe_train)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    ap.add_argument("--keep-export", type=Path, help="also copy each raw export to DIR/<name>")
    args = ap.parse_args()
    binary = args.binary if args.binary.is_absolute() else (REPO / args.binary)
    if not binary.is_file():
        fail(f"no binary at {binary}: build it (bazel build //src:moe_train) or pass --binary")
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a fixed reduction order
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"safetensors {safetensors.__version__}, numpy {np.__version__}")
    for name in args.models:
        r = make_one(name, binary, args.keep_export)
        c = r["checks"]
        print(f"\n{name} ({r['architecture']})")
        print(f"  loss (float64)            {r['loss']:.12f}   float32 transformers: {r['loss_fp32']:.9f} "
              f"(relative {c['fp32_vs_fp64_loss_rel']:.2e}, logits max |diff| {c['fp32_vs_fp64_logits_maxabs']:.2e})")
        print(f"  stock transformers float64 vs float64 throughout: loss relative "
              f"{c['stock_fp64_vs_fp64_loss_rel']:.2e}, logits max |diff| {c['stock_fp64_vs_fp64_logits_maxabs']:.2e}")
        print(f"  AdamW losses              {', '.join(f'{x:.12f}' for x in r['adamw_losses'])}")
        print(f"  max |grad|                {r['max_abs_grad']:.6g}   ({r['n_grad_tensors']} tensors; "
              f"min nonzero |grad| {c['min_nonzero_abs_grad']:.2e}, {c['grad_elements_below_1e-6']} below 1e-6)")
        if "min_router_margin" in c:
            print(f"  over the 3 steps: smallest router top-k margin {c['min_router_margin']:.3e}, "
                  f"fewest tokens for an expert {c['min_expert_load']}")
        if "shared_expert_max_abs_output" in c:
            print(f"  frozen tensors: {r['n_frozen']}; shared expert max |output| over {c['shared_expert_calls']} "
                  f"calls: {c['shared_expert_max_abs_output']}; randomised unused shared-expert tensors leave "
                  f"logits bitwise equal: {c['shared_expert_randomised_logits_bitwise_equal']}")
        print("  files: " + ", ".join(f"{f} {s} B" for f, s in r["sizes"].items()))
    total = sum(f.stat().st_size for f in REFERENCE_ROOT.rglob("*") if f.is_file())
    print(f"\ntotal under {REFERENCE_ROOT.relative_to(REPO)}: {total} B")


if __name__ == "__main__":
    main()
