"""Calibration: activations of a model on real text, turned into predictors and thresholds.

One pass over the text records, per layer: the residual-stream inputs the predictors read, the
SwiGLU importance of every MLP neuron (``|silu(gate) * up| * ||W_down[:, j]||``, the norm of its
contribution to the output), the output norm of every attention head through ``o_proj``, and
magnitude samples of every linear layer's input. From these:

- **Deja Vu predictors** per layer (``d -> rank -> outputs``, no non-linearity, as in the paper),
  trained with positive-weighted BCE on the top fraction of neurons / heads by importance;
  the MLP predictor of layer l reads the residual stream entering layer l's attention block,
  the head predictor the one entering layer l-1's MLP block (one block ahead; with
  ``lookahead=False`` each reads its own block's input);
- **TEAL** magnitude quantiles of each projection's input (and, for the block option, quantiles
  of the RMS of every block of ``BLOCK_SIZES`` consecutive input channels), and the block-wise
  greedy allocation
  (per block, repeatedly raise the sparsity of the projection whose step costs the least
  block-output error, each step moving the size-weighted sparsity by the same amount);
- **CATS** magnitude quantiles of ``silu(gate)``.

Saved as ``predictors.safetensors`` + ``thresholds.safetensors`` + ``manifest.json`` (the model
they belong to, with a weight fingerprint); loading checks the manifest against the model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arch import decoder_layers, model_facts, rms
from .errors import DejaVuSparseError
from .layers import block_ms, predictor_logits

FORMAT = "dejavu-sparse/1"
QUANTILE_LEVELS = torch.linspace(0.0, 1.0, 401)
GREEDY_TARGETS = [round(0.05 * i, 2) for i in range(19)]  # 0.0 .. 0.9
SITES = ("attn_in", "o_in", "mlp_in", "down_in")
SITE_OF = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "o": "o_in", "gate": "mlp_in",
           "up": "mlp_in", "down": "down_in"}  # fmt: skip
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
SAMPLES_PER_SITE = 1 << 16
BLOCK_SIZES = (8, 16, 32, 64)  # TEAL block option: input channels selected in whole blocks


@dataclass
class Calibration:
    """Predictors and thresholds for one model (see the module docstring)."""

    manifest: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    # -- lookups ------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return int(self.manifest["model"]["num_layers"])

    def has_predictors(self) -> bool:
        return "dejavu.mlp.0.down" in self.tensors

    def predictor(self, kind: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"dejavu.{kind}.{layer}"
        if f"{key}.down" not in self.tensors:
            raise DejaVuSparseError(
                f"calibration has no Deja Vu {kind} predictor for layer {layer}"
            )
        return self.tensors[f"{key}.down"], self.tensors[f"{key}.up"]

    def threshold(self, table: str, layer: int, sparsity: float) -> float:
        """The magnitude below which a fraction ``sparsity`` of the calibration values fall."""
        return threshold_from(self.tensors[table][layer], sparsity)

    def teal_allocation(self, layer: int, sparsity: float, greedy: bool = True) -> dict[str, float]:
        """Per-projection input sparsity of a layer whose size-weighted sparsity is ``sparsity``."""
        if not greedy or "teal.greedy" not in self.tensors:
            return {p: sparsity for p in PROJECTIONS}
        table = self.tensors["teal.greedy"][layer].double()  # (7, T)
        grid = torch.tensor(self.manifest["teal_greedy_targets"], dtype=torch.float64)
        if sparsity >= grid[-1]:
            col = table[:, -1]
        else:
            i = (
                int(
                    torch.searchsorted(
                        grid, torch.tensor(sparsity, dtype=torch.float64), right=True
                    )
                )
                - 1
            )
            frac = (sparsity - grid[i]) / (grid[i + 1] - grid[i])
            col = table[:, i] + (table[:, i + 1] - table[:, i]) * frac
        return {p: float(col[j]) for j, p in enumerate(PROJECTIONS)}

    def teal_thresholds(self, layer: int, sparsity: float, greedy: bool = True,
                        block_size: int = 1) -> dict[str, float]:  # fmt: skip
        """Per-projection thresholds: on each input's magnitude, or with ``block_size`` > 1 on
        the RMS of each block of that many consecutive input channels (the allocation between
        projections is the fine-grained one either way)."""
        alloc = self.teal_allocation(layer, sparsity, greedy)
        suffix = "" if block_size <= 1 else f".b{block_size}"
        if suffix and f"teal.attn_in{suffix}" not in self.tensors:
            raise DejaVuSparseError(
                f"calibration has no TEAL thresholds for block_size={block_size} (calibrated "
                f"block sizes: {self.manifest.get('teal_block_sizes', [])}; recalibrate)"
            )
        return {p: self.threshold(f"teal.{SITE_OF[p]}{suffix}", layer, s)
                for p, s in alloc.items()}  # fmt: skip

    # -- model check ----------------------------------------------------------------------------

    def check_model(self, model: Any) -> None:
        """One-line error when this calibration was made for a different model."""
        facts, mine = model_facts(model), self.manifest["model"]
        for key in ("model_type", "num_layers", "hidden_size", "intermediate_size", "num_heads",
                    "num_kv_heads", "head_dim", "fingerprint"):  # fmt: skip
            if facts.get(key) != mine.get(key):
                raise DejaVuSparseError(
                    f"calibration was made for {mine.get('name') or mine.get('model_type')!r} "
                    f"({key}={mine.get(key)}), but this model has {key}={facts.get(key)}"
                )

    # -- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the directory atomically (a temporary sibling renamed into place)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            pred = {k: v.contiguous() for k, v in self.tensors.items() if k.startswith("dejavu.")}
            thr = {
                k: v.contiguous() for k, v in self.tensors.items() if not k.startswith("dejavu.")
            }
            meta = {"format": FORMAT}
            save_file(pred, str(tmp / "predictors.safetensors"), metadata=meta)
            save_file(thr, str(tmp / "thresholds.safetensors"), metadata=meta)
            (tmp / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model: Any | None = None) -> Calibration:
        """Read a saved calibration; with ``model``, check it was made for that model."""
        from safetensors.torch import load_file

        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise DejaVuSparseError(f"{path}: not a dejavu-sparse calibration (no manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise DejaVuSparseError(f"{manifest_path}: unreadable manifest ({exc.msg})") from None
        if manifest.get("format") != FORMAT:
            raise DejaVuSparseError(
                f"{path}: unknown calibration format {manifest.get('format')!r}"
            )
        tensors: dict[str, torch.Tensor] = {}
        for name in ("predictors.safetensors", "thresholds.safetensors"):
            file = path / name
            if not file.is_file():
                raise DejaVuSparseError(f"{path}: missing {name}")
            try:
                tensors.update(load_file(str(file)))
            except Exception as exc:  # safetensors raises several types for a damaged file
                raise DejaVuSparseError(f"{file}: unreadable ({exc})") from None
        calib = cls(manifest, tensors)
        if model is not None:
            calib.check_model(model)
        return calib


def threshold_from(quantiles: torch.Tensor, sparsity: float) -> float:
    """Linear interpolation in a table of magnitude quantiles at evenly spaced levels 0..1
    (0 for sparsity 0: nothing is dropped)."""
    if sparsity <= 0:
        return 0.0
    q = quantiles.double()
    pos = min(sparsity, 1.0) * (q.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, q.numel() - 1)
    return float(q[lo] + (q[hi] - q[lo]) * (pos - lo))


# ---------------------------------------------------------------------------------------------
# collection


def _chunks(ids: torch.Tensor, seq_len: int) -> list[torch.Tensor]:
    n = ids.numel() // seq_len
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(n)]


class _Recorder:
    """Forward hooks that record what calibration needs, layer by layer."""

    def __init__(self, model: Any, greedy_tokens: int, generator: torch.Generator,
                 lookahead: bool = True):  # fmt: skip
        self.layers = decoder_layers(model)
        self.lookahead = lookahead
        n = len(self.layers)
        self.gen = generator
        self.pred_mlp_in: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.pred_attn_in: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.mlp_label: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.head_label: list[list[torch.Tensor]] = [[] for _ in range(n)]
        blocks = [f"{s}.b{b}" for s in SITES for b in BLOCK_SIZES]
        self.samples = {s: [[] for _ in range(n)] for s in (*SITES, "cats", *blocks)}
        self.greedy_tokens = greedy_tokens
        self.greedy_attn: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.greedy_mlp: list[list[torch.Tensor]] = [[] for _ in range(n)]
        self.handles = []
        self.collect_greedy = True
        self.per_call = 1
        for i, layer in enumerate(self.layers):
            self.handles += [
                layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True),
                layer.post_attention_layernorm.register_forward_pre_hook(self._mlp_res(i)),
                layer.self_attn.q_proj.register_forward_pre_hook(self._attn_x(i)),
                layer.self_attn.o_proj.register_forward_pre_hook(self._o_in(i)),
                layer.mlp.register_forward_pre_hook(self._mlp_x(i)),
            ]

    def close(self):
        for h in self.handles:
            h.remove()

    def _sample(self, site: str, i: int, x: torch.Tensor, per_call: int):
        flat = x.detach().abs().float().reshape(-1)
        self._take(site, i, flat, per_call)
        if site in SITES:
            rows = x.detach().float().reshape(-1, x.shape[-1])
            for b in BLOCK_SIZES:
                rms_ = block_ms(rows, b).sqrt().reshape(-1)
                self._take(f"{site}.b{b}", i, rms_, per_call, every=rms_.numel() <= per_call)

    def _take(self, site: str, i: int, flat: torch.Tensor, per_call: int, every: bool = False):
        """``per_call`` values drawn with replacement (``every``: all of them, once each)."""
        if every:
            self.samples[site][i].append(flat.cpu())
            return
        take = torch.randint(0, flat.numel(), (min(per_call, flat.numel()),), generator=self.gen)
        self.samples[site][i].append(flat[take.to(flat.device)].cpu())

    def _layer_in(self, i):
        def hook(module, args, kwargs):
            hs = args[0] if args else kwargs["hidden_states"]
            z = rms(hs.detach()).reshape(-1, hs.shape[-1]).half().cpu()
            # one block ahead: layer i's MLP predictor; else layer i's own head predictor
            (self.pred_mlp_in if self.lookahead else self.pred_attn_in)[i].append(z)

        return hook

    def _mlp_res(self, i):
        def hook(module, args):
            hs = args[0].detach()
            z = rms(hs).reshape(-1, hs.shape[-1]).half().cpu()
            if not self.lookahead:  # layer i's own MLP predictor
                self.pred_mlp_in[i].append(z)
            elif i + 1 < len(self.layers):  # one block ahead: layer i+1's head predictor
                self.pred_attn_in[i + 1].append(z)

        return hook

    def _attn_x(self, i):
        def hook(module, args):
            x = args[0]
            self._sample("attn_in", i, x, self.per_call)
            if self.collect_greedy:
                self.greedy_attn[i].append(x.detach().float().cpu())

        return hook

    def _o_in(self, i):
        def hook(module, args):
            x = args[0].detach()
            self._sample("o_in", i, x, self.per_call)
            attn = self.layers[i].self_attn
            hd = attn.head_dim
            w = module.weight.float()  # (d, H*hd)
            xs = x.float().reshape(-1, w.shape[1] // hd, hd)  # (T, H, hd)
            wh = w.view(w.shape[0], -1, hd)  # (d, H, hd)
            contrib = torch.einsum("thk,dhk->thd", xs, wh).norm(dim=-1)  # (T, H)
            self.head_label[i].append(contrib.half().cpu())

        return hook

    def _mlp_x(self, i):
        def hook(module, args):
            x = args[0].detach()
            self._sample("mlp_in", i, x, self.per_call)
            if self.collect_greedy:
                self.greedy_mlp[i].append(x.float().cpu())
            a = module.act_fn(module.gate_proj(x))
            h = a * module.up_proj(x)
            self._sample("cats", i, a, self.per_call)
            self._sample("down_in", i, h, self.per_call)
            col = module.down_proj.weight.float().norm(dim=0)
            imp = (h.float().abs() * col).reshape(-1, h.shape[-1])
            self.mlp_label[i].append(imp.half().cpu())

        return hook


def collect(model, ids: torch.Tensor, *, seq_len: int, greedy_tokens: int, seed: int = 0,
            progress: bool = True, lookahead: bool = True):  # fmt: skip
    """Run the model over ``ids`` in ``seq_len`` chunks with the recorder attached."""
    from tqdm.auto import tqdm

    chunks = _chunks(ids, seq_len)
    if not chunks:
        raise DejaVuSparseError(
            f"calibration text has {ids.numel()} tokens, fewer than one {seq_len}-token sequence"
        )
    gen = torch.Generator().manual_seed(seed)
    rec = _Recorder(model, greedy_tokens, gen, lookahead)
    rec.per_call = max(1, SAMPLES_PER_SITE // len(chunks))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for n, chunk in enumerate(tqdm(chunks, desc="collect", disable=not progress)):
                rec.collect_greedy = n * seq_len < greedy_tokens
                model(chunk.unsqueeze(0).to(device), use_cache=False)
    finally:
        rec.close()
    if lookahead:  # layer 0's head predictor reads the residual entering layer 0
        rec.pred_attn_in[0] = list(rec.pred_mlp_in[0])
    return rec


# ---------------------------------------------------------------------------------------------
# predictors


def train_predictor(x: torch.Tensor, importance: torch.Tensor, *, rank: int, density: float,
                    epochs: int, seed: int, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Low-rank linear classifier ``x -> rank -> outputs`` for "in the top ``density`` fraction
    by importance" (BCE with the positive class weighted by its rarity, AdamW)."""
    g = torch.Generator().manual_seed(seed)
    n_out = importance.shape[1]
    k = max(1, round(density * n_out))
    labels = torch.zeros_like(importance, dtype=torch.float32)
    labels.scatter_(1, importance.float().topk(k, dim=1).indices, 1.0)
    rank = max(1, min(rank, x.shape[1], n_out))
    down = nn.Linear(x.shape[1], rank, bias=False)
    up = nn.Linear(rank, n_out, bias=True)
    with torch.no_grad():
        down.weight.copy_(torch.randn(down.weight.shape, generator=g) / x.shape[1] ** 0.5)
        up.weight.copy_(torch.randn(up.weight.shape, generator=g) / rank**0.5)
        up.bias.zero_()
    params = [*down.parameters(), *up.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    pos_weight = torch.full((n_out,), (1 - density) / density)
    xf = x.float()
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(xf.shape[0], generator=g)
            for s in range(0, xf.shape[0], batch):
                sel = perm[s : s + batch]
                logits = up(down(xf[sel]))
                loss = F.binary_cross_entropy_with_logits(
                    logits, labels[sel], pos_weight=pos_weight
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
    # Stored as two factors, the bias as the up factor's last column (see predictor_logits).
    d_w, u_w, b = down.weight.detach(), up.weight.detach(), up.bias.detach()
    return d_w, torch.cat([u_w, b[:, None]], 1)


def recall_at(pred, x: torch.Tensor, importance: torch.Tensor, keep: int) -> float:
    """Mean fraction of the oracle top-``keep`` (by importance) that the predictor's top-``keep``
    recovers."""
    logits = predictor_logits(pred, x.float())
    p = _mask(logits, keep)
    o = _mask(importance.float(), keep)
    return float((p & o).sum() / o.sum())


def _mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    top = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)


# ---------------------------------------------------------------------------------------------
# greedy TEAL allocation


def _greedy_block(evaluate, sizes: dict[str, int], targets: Iterable[float], step: float = 0.05):
    """Block-wise greedy: from all-dense, repeatedly take the projection whose step (moving the
    size-weighted sparsity by ``step``) gives the smallest block error, recording the allocation
    at every target."""
    total = sum(sizes.values())
    alloc = {p: 0.0 for p in sizes}
    targets = list(targets)
    table = {p: [0.0] * len(targets) for p in sizes}
    level = 0.0
    ti = 1
    while ti < len(targets):
        best, best_err = None, float("inf")
        for p in sizes:
            s = alloc[p] + step * total / sizes[p]
            if s > 0.99:
                continue
            err = evaluate({**alloc, p: s})
            if err < best_err:
                best, best_err = p, err
        if best is None:  # every projection at its cap: spread the rest uniformly
            break
        alloc[best] += step * total / sizes[best]
        level += step
        while ti < len(targets) and level >= targets[ti] - 1e-9:
            for p in sizes:
                table[p][ti] = alloc[p]
            ti += 1
    for j in range(ti, len(targets)):
        for p in sizes:
            table[p][j] = min(0.99, targets[j])
    return table


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum() / b.pow(2).sum().clamp_min(1e-30))


def greedy_allocation(model, rec: _Recorder, quantiles: dict[str, torch.Tensor], *,
                      progress: bool = True) -> torch.Tensor:  # fmt: skip
    """(L, 7, T) per-projection input sparsity at each weighted target of ``GREEDY_TARGETS``."""
    from tqdm.auto import tqdm

    from .layers import _mask_input

    layers = rec.layers
    rotary = model.model.rotary_emb
    out = torch.zeros(len(layers), len(PROJECTIONS), len(GREEDY_TARGETS))

    def thr(site, i, s):
        return threshold_from(quantiles[site][i], s)

    for i, layer in enumerate(tqdm(layers, desc="teal greedy", disable=not progress)):
        attn, mlp = layer.self_attn, layer.mlp
        dev = attn.q_proj.weight.device
        xa = [x.to(dev) for x in rec.greedy_attn[i]]
        xm = [x.to(dev) for x in rec.greedy_mlp[i]]

        def attn_out(alloc, xa=xa, attn=attn, i=i, dev=dev):
            from .layers import _attend, _heads

            outs = []
            for x in xa:
                pos = rotary(x, torch.arange(x.shape[1], device=dev)[None])
                ts = {p: thr("attn_in", i, alloc.get(p, 0.0)) for p in ("q", "k", "v")}
                q = _heads(attn.q_proj(_mask_input(x, ts["q"])), attn)
                k = _heads(attn.k_proj(_mask_input(x, ts["k"])), attn)
                v = _heads(attn.v_proj(_mask_input(x, ts["v"])), attn)
                o = _attend(attn, q, k, v, pos, None, None, {}).reshape(*x.shape[:-1], -1)
                outs.append(attn.o_proj(_mask_input(o, thr("o_in", i, alloc.get("o", 0.0)))))
            return torch.cat(outs, 1)

        def mlp_out(alloc, xm=xm, mlp=mlp, i=i):
            outs = []
            for x in xm:
                xg = _mask_input(x, thr("mlp_in", i, alloc["gate"]))
                xu = _mask_input(x, thr("mlp_in", i, alloc["up"]))
                h = mlp.act_fn(mlp.gate_proj(xg)) * mlp.up_proj(xu)
                outs.append(mlp.down_proj(_mask_input(h, thr("down_in", i, alloc["down"]))))
            return torch.cat(outs, 1)

        with torch.no_grad():
            ref_a = attn_out({})
            ref_m = mlp_out({"gate": 0.0, "up": 0.0, "down": 0.0})
            sizes_a = {p: getattr(attn, f"{p}_proj").weight.numel() for p in ("q", "k", "v", "o")}
            sizes_m = {p: getattr(mlp, f"{p}_proj").weight.numel() for p in ("gate", "up", "down")}
            ta = _greedy_block(lambda a, r=ref_a: _rel_err(attn_out(a), r), sizes_a, GREEDY_TARGETS)
            tm = _greedy_block(lambda a, r=ref_m: _rel_err(mlp_out(a), r), sizes_m, GREEDY_TARGETS)
        for j, p in enumerate(PROJECTIONS):
            out[i, j] = torch.tensor((ta | tm)[p])
    return out


# ---------------------------------------------------------------------------------------------
# the whole procedure


def calibrate(model: Any, ids: torch.Tensor, *, seq_len: int = 256, rank: int = 1000,
              mlp_density: float = 0.5, head_density: float = 0.5, epochs: int = 10,
              greedy: bool = True, greedy_tokens: int = 128, seed: int = 0,
              progress: bool = True, source: str = "", lookahead: bool = True) -> Calibration:  # fmt: skip
    """Calibrate ``model`` on the token ids ``ids`` (1-D). ``rank``: the predictors' inner size
    (Deja Vu: 1000; capped at the model width). ``*_density``: the top fraction labelled
    positive when training the predictors. ``greedy``: compute TEAL's block-wise allocation.
    ``lookahead``: predictors read the residual stream one block ahead (Deja Vu's choice, so a
    GPU can run them on a side stream); ``False``: each block's own input (more accurate, and
    nothing is lost on a CPU, which runs them in line anyway)."""
    from tqdm.auto import tqdm

    for name, v in (("mlp_density", mlp_density), ("head_density", head_density)):
        if not 0 < v < 1:
            raise DejaVuSparseError(f"{name} must be in (0, 1), got {v}")
    facts = model_facts(model)
    ids = ids.reshape(-1)
    was_training = model.training
    model.eval()
    rec = collect(model, ids, seq_len=seq_len, greedy_tokens=greedy_tokens, seed=seed,
                  progress=progress, lookahead=lookahead)  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    quantiles = {}
    block_sites = [f"{s}.b{b}" for s in SITES for b in BLOCK_SIZES]
    for site in (*SITES, "cats", *block_sites):
        rows = [torch.quantile(torch.cat(rec.samples[site][i]).float(), QUANTILE_LEVELS)
                for i in range(len(rec.layers))]  # fmt: skip
        quantiles[site] = torch.stack(rows)
    for site in (*SITES, *block_sites):
        tensors[f"teal.{site}"] = quantiles[site]
    tensors["cats.gate"] = quantiles["cats"]
    recalls = []
    for i in tqdm(range(len(rec.layers)), desc="predictors", disable=not progress):
        x_mlp = torch.cat(rec.pred_mlp_in[i])
        y_mlp = torch.cat(rec.mlp_label[i])
        x_att = torch.cat(rec.pred_attn_in[i])
        y_att = torch.cat(rec.head_label[i])
        pm = train_predictor(
            x_mlp, y_mlp, rank=rank, density=mlp_density, epochs=epochs, seed=seed + i
        )
        ph = train_predictor(x_att, y_att, rank=rank, density=head_density, epochs=epochs * 2,
                             seed=seed + 1000 + i)  # fmt: skip
        tensors[f"dejavu.mlp.{i}.down"], tensors[f"dejavu.mlp.{i}.up"] = pm
        tensors[f"dejavu.heads.{i}.down"], tensors[f"dejavu.heads.{i}.up"] = ph
        keep = max(1, round(mlp_density * y_mlp.shape[1]))
        recalls.append(recall_at(pm, x_mlp, y_mlp, keep))
    manifest = {
        "format": FORMAT,
        "model": facts,
        "tokens": int(ids.numel() // seq_len * seq_len),
        "seq_len": seq_len,
        "source": source,
        "rank": int(tensors["dejavu.mlp.0.down"].shape[0]),
        "mlp_density": mlp_density,
        "head_density": head_density,
        "lookahead": lookahead,
        "quantile_levels": len(QUANTILE_LEVELS),
        "teal_greedy_targets": GREEDY_TARGETS,
        "teal_block_sizes": list(BLOCK_SIZES),
        "train_recall_mlp": [round(r, 4) for r in recalls],
    }
    if greedy:
        tensors["teal.greedy"] = greedy_allocation(model, rec, quantiles, progress=progress)
    model.train(was_training)
    return Calibration(manifest, tensors)
