"""LoRA RL on one base: PERL's REINFORCE with a learned value baseline, RLOO and PPO.

Every iteration: sample prompts' responses with the policy adapter, score them (reward adapter
+ head), take reference log-probs with adapters off and values with the value adapter, shape
the reward with a KL penalty, compute advantages, and update. PERL's objective weights the
reward by (1 - beta) and the KL by beta (``reward_weight=None``); pass ``reward_weight=1.0`` for
TRL's r - beta * KL.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import rl
from .data import encode_prompts, load_rows, pad_id
from .distributed import all_sum, shard, sum_gradients, world
from .errors import PerlError
from .model import PerlModel
from .reward import _progress
from .rollout import (
    RewardFn,
    Rollout,
    response_values,
    sample,
    score_rollout,
    token_logprobs,
)

ALGORITHMS = ("reinforce", "rloo", "ppo")


@dataclass
class PolicyConfig:
    """RL settings. ``batch_size`` prompts per iteration, each sampled ``samples_per_prompt``
    times (RLOO needs at least 2)."""

    algorithm: str = "reinforce"
    steps: int = 10
    batch_size: int = 8
    samples_per_prompt: int = 1
    lr: float = 1e-4
    beta: float = 0.05
    kl_mode: str = "token"
    kl_estimator: str = "k1"
    reward_weight: float | None = None
    whiten_rewards: bool = False
    reward_clip: float | None = None
    whiten_advantages: bool | None = None
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    ppo_epochs: int = 2
    clip_range: float = 0.2
    value_clip: float | None = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    value_coef: float = 1.0
    max_grad_norm: float | None = 1.0
    micro_batch_size: int | None = None
    max_length: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise PerlError(
                f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}"
            )
        if self.kl_mode not in ("token", "sequence"):
            raise PerlError(f"kl_mode must be 'token' or 'sequence', got {self.kl_mode!r}")
        if self.algorithm == "rloo" and self.samples_per_prompt < 2:
            raise PerlError("RLOO needs samples_per_prompt >= 2")
        if not 0.0 <= self.beta < 1.0:
            raise PerlError(f"beta must be in [0, 1), got {self.beta}")
        if self.steps < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise PerlError("steps, batch_size and max_new_tokens must be at least 1")

    @property
    def uses_value(self) -> bool:
        return self.algorithm in ("reinforce", "ppo")

    @property
    def weight(self) -> float:
        return 1.0 - self.beta if self.reward_weight is None else self.reward_weight


@dataclass
class PolicyResult:
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _shape_scores(scores: torch.Tensor, config: PolicyConfig) -> torch.Tensor:
    if config.reward_clip is not None:
        scores = scores.clamp(-config.reward_clip, config.reward_clip)
    if config.whiten_rewards:
        scores = rl.whiten(scores)
    return scores


def compute_advantages(rollout: Rollout, config: PolicyConfig) -> dict[str, torch.Tensor]:
    """KL-shaped rewards, advantages and value targets of a scored rollout."""
    assert rollout.logprobs is not None and rollout.ref_logprobs is not None
    assert rollout.scores is not None
    mask = rollout.response_mask.float()
    kl = rl.kl_per_token(rollout.logprobs, rollout.ref_logprobs, config.kl_estimator) * mask
    scores = _shape_scores(rollout.scores.float(), config)
    rewards = rl.token_rewards(
        scores, kl, mask, beta=config.beta, kl_mode=config.kl_mode, reward_weight=config.weight
    )
    out = {"kl": kl, "rewards": rewards}
    if config.algorithm == "reinforce":
        assert rollout.values is not None
        returns = rl.returns_to_go(rewards, mask, config.gamma)
        out["returns"] = returns
        out["advantages"] = (returns - rollout.values) * mask
    elif config.algorithm == "rloo":
        seq = rl.masked_sum(rewards, mask, -1)
        adv = rl.rloo_advantages(seq, config.samples_per_prompt)
        out["advantages"] = adv[:, None] * mask
    else:
        assert rollout.values is not None
        adv, returns = rl.gae(rewards, rollout.values, mask, gamma=config.gamma, lam=config.lam)
        out["returns"] = returns
        out["advantages"] = adv
    whiten_adv = config.whiten_advantages
    if whiten_adv is None:
        whiten_adv = config.algorithm == "ppo"
    if whiten_adv:
        out["advantages"] = rl.masked_whiten(out["advantages"], mask)
    return out


class PolicyTrainer:
    """RL on a ``PerlModel`` with ``policy`` (+ ``value`` for REINFORCE/PPO) and ``reward``
    roles, or with a ``reward_fn(prompts, responses) -> scores`` instead of the reward role.

    ``prompts``: RL prompt rows (JSONL path, ``datasets.Dataset``, dicts or strings).
    ``true_reward_fn``: optional rule that is logged beside the learned reward."""

    def __init__(
        self,
        model: PerlModel,
        tokenizer,
        prompts,
        *,
        config: PolicyConfig | None = None,
        reward_fn: RewardFn | None = None,
        true_reward_fn: RewardFn | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or PolicyConfig()
        if "policy" not in model.roles:
            raise PerlError("the model has no policy role")
        if config.uses_value and "value" not in model.roles:
            raise PerlError(f"{config.algorithm} needs a value role (or use algorithm='rloo')")
        if reward_fn is None and "reward" not in model.roles:
            raise PerlError("no reward: give the model a reward role or pass reward_fn")
        self.reward_fn, self.true_reward_fn = reward_fn, true_reward_fn
        trainable = ("policy", "value") if config.uses_value else ("policy",)
        model.set_trainable(trainable)
        self.prompt_ids, self.prompt_texts = self.encode(prompts)
        self.params = model.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=0.0)
        self.pad = pad_id(tokenizer)
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        eos_ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
        if isinstance(eos, int):
            eos_ids.add(eos)
        self.eos_ids = sorted(eos_ids)
        self.rng = random.Random(config.seed)
        self.history: list[dict] = []
        self.step_index = 0

    # -- one iteration ---------------------------------------------------------------------

    def next_prompts(self) -> list[int]:
        """Indices of the next global batch of prompts (the same on every rank)."""
        n = len(self.prompt_ids)
        return [self.rng.randrange(n) for _ in range(self.config.batch_size)]

    def make_rollout(self, prompt_indices: Sequence[int]) -> tuple[Rollout, list[str], list[str]]:
        """Sample and score this rank's share of the prompts (each ``samples_per_prompt`` times)."""
        cfg = self.config
        mine = shard(list(prompt_indices))
        k = cfg.samples_per_prompt
        idx = [i for i in mine for _ in range(k)]
        self.model.eval()
        rollout = sample(
            self.model,
            [self.prompt_ids[i] for i in idx],
            pad_token=self.pad,
            eos_ids=self.eos_ids,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            min_new_tokens=cfg.min_new_tokens,
        )
        prompts = [self.prompt_texts[i] for i in idx]
        responses = self.decode(rollout)
        score_rollout(
            self.model,
            rollout,
            temperature=cfg.temperature,
            need_values=cfg.uses_value,
            reward_fn=self.reward_fn,
            texts=(prompts, responses),
        )
        return rollout, prompts, responses

    def decode(self, rollout: Rollout) -> list[str]:
        return [
            self.tokenizer.decode(r[m.bool()], skip_special_tokens=True)
            for r, m in zip(rollout.response_ids, rollout.response_mask, strict=True)
        ]

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Advantages and the gradient step(s) for a scored rollout (this rank's share)."""
        cfg, model = self.config, self.model
        mask = rollout.response_mask.float()
        n_seq = float(all_sum(torch.tensor(float(mask.shape[0]))))
        n_tok = float(all_sum(mask.sum().cpu()))
        adv = compute_advantages(rollout, cfg)
        p_len = rollout.prompt_ids.shape[1]
        micro = cfg.micro_batch_size or max(1, mask.shape[0])
        epochs = cfg.ppo_epochs if cfg.algorithm == "ppo" else 1
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0}
        model.train()
        try:
            for _ in range(epochs):
                self.optimizer.zero_grad(set_to_none=True)
                for lo in range(0, mask.shape[0], micro):
                    rows = slice(lo, lo + micro)
                    part = rollout.select(rows)
                    m = mask[rows]
                    logp, _ = token_logprobs(
                        model,
                        "policy",
                        part.input_ids,
                        part.attention_mask,
                        p_len,
                        temperature=cfg.temperature,
                    )
                    if cfg.algorithm == "ppo":
                        assert part.logprobs is not None
                        loss, frac = rl.ppo_clip_loss(
                            logp,
                            part.logprobs,
                            adv["advantages"][rows],
                            m,
                            clip=cfg.clip_range,
                            n_tokens=n_tok,
                        )
                        stats["clip_fraction"] += float(frac) / epochs
                    else:
                        loss = rl.reinforce_loss(logp, adv["advantages"][rows], m, n_seq)
                    loss.backward()
                    stats["policy_loss"] += float(loss.detach()) / epochs
                    if cfg.uses_value:
                        v = response_values(model, part)
                        vloss = rl.value_loss(
                            v,
                            adv["returns"][rows],
                            m,
                            n_tokens=n_tok,
                            old_values=part.values if cfg.algorithm == "ppo" else None,
                            clip=cfg.value_clip if cfg.algorithm == "ppo" else None,
                        )
                        (cfg.value_coef * vloss).backward()
                        stats["value_loss"] += float(vloss.detach()) / epochs
                sum_gradients(self.params)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
        finally:
            model.eval()
        kl_seq = rl.masked_sum(adv["kl"], mask, -1)
        ent = rollout.entropy if rollout.entropy is not None else torch.zeros_like(mask)
        return {
            "reward": float(all_sum(rollout.scores.float().sum().cpu())) / n_seq,  # type: ignore[union-attr]
            "kl": float(all_sum(kl_seq.sum().cpu())) / n_seq,
            "entropy": float(all_sum(rl.masked_sum(ent, mask).cpu())) / n_tok,
            "response_length": n_tok / n_seq,
            **{k: float(all_sum(torch.tensor(v))) for k, v in stats.items()},
        }

    def step(self) -> dict[str, float]:
        """One RL iteration: rollout + update. Returns (and logs) its statistics."""
        t0 = time.perf_counter()
        rollout, prompts, responses = self.make_rollout(self.next_prompts())
        t1 = time.perf_counter()
        row: dict = {"step": self.step_index, **self.update(rollout)}
        if self.true_reward_fn is not None:
            true = torch.tensor([float(x) for x in self.true_reward_fn(prompts, responses)])
            row["true_reward"] = float(all_sum(true.sum())) / max(
                1.0, float(all_sum(torch.tensor(float(len(true)))))
            )
        row["rollout_seconds"] = t1 - t0
        row["seconds"] = time.perf_counter() - t0
        self.history.append(row)
        self.step_index += 1
        return row

    def train(
        self, *, progress: bool = True, on_step: Callable[[dict], None] | None = None
    ) -> PolicyResult:
        rank, _ = world()
        bar = _progress(self.config.steps, self.config.algorithm, progress and rank == 0)
        try:
            for _ in range(self.config.steps):
                row = self.step()
                if on_step:
                    on_step(row)
                bar.update(1)
                post = {"reward": f"{row['reward']:.3f}", "kl": f"{row['kl']:.3f}"}
                if "true_reward" in row:
                    post["true"] = f"{row['true_reward']:.2f}"
                bar.set_postfix(post)
        finally:
            bar.close()
        return PolicyResult(history=list(self.history), config=asdict(self.config))

    def encode(self, prompts):
        """Token ids and texts of ``prompts`` (a JSONL path, a ``datasets.Dataset``, or a list of
        rows or strings), each leaving room for ``max_new_tokens`` within the context."""
        limit = self.config.max_length or getattr(
            self.model.config, "max_position_embeddings", None
        )
        return encode_prompts(
            load_rows(prompts) if not isinstance(prompts, list) else prompts,
            self.tokenizer,
            max_length=limit,
            max_new_tokens=self.config.max_new_tokens,
        )

    # -- evaluation ------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self,
        rule: RewardFn,
        *,
        prompts=None,
        n: int | None = None,
        samples: int = 1,
        seed: int = 1234,
    ) -> float:
        """Mean ``rule`` reward of ``samples`` fresh samples for each of the first ``n`` prompts
        (all by default) of ``prompts`` (held-out prompts, in any form the trainer takes; the
        training prompts by default). ``evaluate_rule`` also gives the standard error."""
        return self.evaluate_rule(rule, prompts=prompts, n=n, samples=samples, seed=seed)["mean"]

    @torch.no_grad()
    def evaluate_rule(
        self,
        rule: RewardFn,
        *,
        prompts=None,
        n: int | None = None,
        samples: int = 1,
        seed: int = 1234,
    ) -> dict[str, float]:
        """``{"mean", "stderr", "n"}`` of ``rule`` over ``samples`` fresh policy samples for each
        of the first ``n`` prompts (see ``evaluate``). The standard error is the sample
        standard deviation over sqrt(count)."""
        if prompts is None:
            ids, texts = self.prompt_ids, self.prompt_texts
        else:
            ids, texts = self.encode(prompts)
        indices = list(range(len(ids)))[: n or len(ids)] * samples
        values: list[float] = []
        width = max(1, self.config.batch_size * self.config.samples_per_prompt)
        # Seeded draws that leave the global generator (and so training's samples) as they were.
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for lo in range(0, len(indices), width):
                chunk = indices[lo : lo + width]
                r = sample(
                    self.model,
                    [ids[i] for i in chunk],
                    pad_token=self.pad,
                    eos_ids=self.eos_ids,
                    max_new_tokens=self.config.max_new_tokens,
                    temperature=self.config.temperature,
                    top_k=self.config.top_k,
                    top_p=self.config.top_p,
                )
                values += [float(v) for v in rule([texts[i] for i in chunk], self.decode(r))]
        count = len(values)
        mean = sum(values) / max(1, count)
        var = sum((v - mean) ** 2 for v in values) / max(1, count - 1)
        return {"mean": mean, "stderr": (var / max(1, count)) ** 0.5, "n": float(count)}


def train_policy(
    model: PerlModel,
    tokenizer,
    prompts,
    *,
    config: PolicyConfig | None = None,
    reward_fn: RewardFn | None = None,
    true_reward_fn: RewardFn | None = None,
    progress: bool = True,
) -> PolicyResult:
    """Run ``config.steps`` RL iterations (see ``PolicyTrainer``)."""
    trainer = PolicyTrainer(
        model, tokenizer, prompts, config=config, reward_fn=reward_fn, true_reward_fn=true_reward_fn
    )
    return trainer.train(progress=progress)


def write_log(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """One JSON object per step, written atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)
    return path


def plot_log(history: Sequence[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Reward (learned and, if logged, the rule's), KL, entropy and response length per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [r["step"] for r in history]
    panels = [("reward", "reward"), ("kl", "KL to reference"), ("entropy", "entropy / token")]
    panels.append(("response_length", "response tokens"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(steps, [r[key] for r in history], marker=".", label="learned reward model")
        if key == "reward" and all("true_reward" in r for r in history):
            # The rule's reward on its own axis: its scale (0-1 for a rule) differs from the model's.
            rule_ax = ax.twinx()
            rule_ax.plot(
                steps, [r["true_reward"] for r in history], marker=".", color="C1", label="rule"
            )
            rule_ax.set_ylabel("rule reward", color="C1")
            ax.set_ylabel("learned reward", color="C0")
        elif key == "reward":
            ax.set_ylabel("learned reward")
        ax.set_xlabel("RL step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


__all__ = [
    "ALGORITHMS",
    "PolicyConfig",
    "PolicyResult",
    "PolicyTrainer",
    "compute_advantages",
    "plot_log",
    "train_policy",
    "write_log",
]
