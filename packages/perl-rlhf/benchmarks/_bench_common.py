"""Shared by bench_cpu.py and bench_gpu.py: one configuration per child process (clean peaks),
rounds interleaved, each child reporting peak memory and the median step time as one JSON line.

Configurations (``kind``):
  reward_full, reward_lora{r}     reward-model training step (pairwise, Bradley-Terry)
  rl_{algo}_full, rl_{algo}_lora{r}  one RL iteration: rollout (sample, score, reference, value)
                                  + update; full = separate policy / reference / value / reward
                                  weights, LoRA = adapters on one frozen base
  trl_reward, trl_rloo            TRL's RewardTrainer / RLOOTrainer with peft LoRA (rank 8) on
                                  the same model, batch and lengths (needs `trl` importable;
                                  TRL checkpoints activations by default)
  <any of ours>_gc                the same with gradient checkpointing
  interleaved_reward              full and LoRA 8 reward steps alternating in one process (the
                                  speed ratio under the same machine load)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
GC = "_gc"  # configuration suffix: gradient checkpointing on


LLAMA_1B: dict[str, Any] = dict(
    # Llama-3.2-1B shapes (random weights): 16 layers, d 2048, GQA 32/8, vocab 128256.
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
    rope_theta=500000.0,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=None,
)


def word_tokenizer(n_words: int = 4000):
    """A whitespace word-level tokenizer built in code (pad 0, eos 1), for random-weight models
    that have no tokenizer of their own."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return fast


def load(model: str, device: str, dtype_name: str, *, head: bool = False):
    """``(model, tokenizer)``: the causal LM, or with ``head`` a sequence-classification model
    with one label (what TRL's trainers take as a reward model)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    if model == "llama-1b":
        cfg = LlamaConfig(**LLAMA_1B)
        cfg.num_labels = 1
        cls = LlamaForSequenceClassification if head else LlamaForCausalLM
        with torch.device(device):
            m = cls(cfg).to(dtype)
        return m.eval(), word_tokenizer()
    from tensor_utils_dev.models import smollm2_dir

    path = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(path)
    if head:
        m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
        m.config.pad_token_id = tok.pad_token_id
    else:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    m = cast(Any, m).to(device)
    if device == "cpu":
        # Weights loaded from safetensors may stay memory-mapped file pages (not counted as
        # anonymous memory) until written; copy them into ordinary memory so every
        # configuration's peak counts its weights the same way.
        for prm in m.parameters():
            prm.data = prm.data.clone()
    return m.eval(), tok


def random_text(tok, n: int, seed: int) -> str:
    """About ``n`` tokens of plain words from the tokenizer's vocabulary."""
    import random

    rng = random.Random(seed)
    # Whole words that decode and re-encode to one token each, so n words are n tokens.
    words = sorted(
        w
        for w in tok.get_vocab()
        if (w.startswith("Ġ") and w[1:].isalpha()) or (w.startswith("w") and w[1:].isdigit())
    )[:20000]
    ids = tok.convert_tokens_to_ids([rng.choice(words) for _ in range(n)])
    return tok.decode(ids)


def child(args) -> dict:
    import torch

    from tensor_utils_dev.bench import PeakMemory

    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(args.threads)
    sizes: dict[str, float] = {}
    with PeakMemory(cuda=cuda) as mem:
        if args.kind.startswith("trl_"):
            times = run_trl(args, sizes)
        elif args.kind == "interleaved_reward":
            times = run_interleaved_reward(args, sizes)
        else:
            base, tok = load(args.model, args.device, args.dtype)
            run = run_reward if args.kind.startswith("reward_") else run_rl
            times = run(args, base, tok, base.config.vocab_size, sizes)
    return {
        "kind": args.kind,
        "peak_anon_mib": mem.anon_bytes / 2**20,
        "start_anon_mib": mem.baseline_anon_bytes / 2**20,
        "peak_rss_mib": mem.rss_hwm_bytes / 2**20,
        "peak_cuda_mib": mem.cuda_bytes / 2**20 if cuda else "",
        "step_ms": statistics.median(t[0] for t in times) * 1e3,
        # CPU seconds of the whole process per step: the work done, little affected by other
        # processes competing for the cores (wall time is).
        "step_cpu_ms": statistics.median(t[1] for t in times) * 1e3,
        "steps_timed": len(times),
        **sizes,
    }


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def param_sizes(modules, optimizer=None) -> dict[str, float]:
    """MiB of distinct parameter storage, of the trainable part, and of the optimizer state."""
    seen: dict[int, int] = {}
    trainable: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            key = p.untyped_storage().data_ptr()
            seen[key] = p.untyped_storage().nbytes()
            if p.requires_grad:
                trainable[key] = p.untyped_storage().nbytes()
    out = {
        "weights_mib": sum(seen.values()) / 2**20,
        "trainable_mib": sum(trainable.values()) / 2**20,
    }
    if optimizer is not None:
        state = sum(
            t.numel() * t.element_size()
            for st in optimizer.state.values()
            for t in st.values()
            if hasattr(t, "numel")
        )
        out["optimizer_state_mib"] = state / 2**20
    return out


def _lora(kind: str, targets: str):
    from perl_rlhf import LoraSpec

    kind = kind.removesuffix(GC)
    if kind.endswith("_full"):
        return None
    rank = int(kind.rsplit("lora", 1)[1])
    return LoraSpec(rank=rank, targets=targets)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reward_step(args, kind: str, base, tok, vocab):
    """``(step, model, optimizer)``: one pairwise reward-model training step of ``kind``."""
    import torch
    from perl_rlhf import PerlModel
    from perl_rlhf.reward import bradley_terry_loss

    lora = _lora(kind, args.targets)
    gc = kind.endswith(GC)
    model = PerlModel(base, roles=("reward",), lora=lora, tokenizer=tok, gradient_checkpointing=gc)
    model.heads.to(args.device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5 if lora is None else 1e-4)
    g = torch.Generator().manual_seed(0)
    b, t = args.batch, args.seq
    ids = torch.randint(3, vocab, (2 * b, t), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    model.train()

    def step() -> tuple[float, float]:
        _sync(args.device)
        t0 = _clock()
        opt.zero_grad(set_to_none=True)
        s = model.scores(ids, mask)
        bradley_terry_loss(s[:b], s[b:]).mean().backward()
        opt.step()
        _sync(args.device)
        return _since(t0)

    return step, model, opt


def run_reward(args, base, tok, vocab, sizes: dict) -> list[tuple[float, float]]:
    step, model, opt = reward_step(args, args.kind, base, tok, vocab)
    times = [step() for _ in range(args.steps + 1)][1:]
    sizes.update(param_sizes([model], opt))
    return times


def run_interleaved_reward(args, sizes: dict) -> list[tuple[float, float]]:
    """Full fine-tuning and LoRA rank 8 reward steps in one process, alternating (full, LoRA,
    full, LoRA, ...), so both see the same machine load; medians and their ratio go into
    ``sizes``. Returns the LoRA times."""
    import statistics as st

    full = reward_step(args, "reward_full", *_loaded(args))[0]
    lora = reward_step(args, "reward_lora8", *_loaded(args))[0]
    full()  # warm-up
    lora()
    pairs = [(full(), lora()) for _ in range(args.steps)]
    for i, name in enumerate(("full", "lora8")):
        sizes[f"{name}_step_ms"] = st.median(p[i][0] for p in pairs) * 1e3
        sizes[f"{name}_step_cpu_ms"] = st.median(p[i][1] for p in pairs) * 1e3
    sizes["speedup_cpu"] = sizes["full_step_cpu_ms"] / sizes["lora8_step_cpu_ms"]
    sizes["speedup_wall"] = sizes["full_step_ms"] / sizes["lora8_step_ms"]
    return [p[1] for p in pairs]


def _loaded(args):
    base, tok = load(args.model, args.device, args.dtype)
    return base, tok, base.config.vocab_size


def run_rl(args, base, tok, vocab, sizes: dict) -> list[tuple[float, float]]:
    import torch
    from perl_rlhf import PerlModel, PolicyConfig, PolicyTrainer

    algo = args.kind.split("_")[1]
    lora = _lora(args.kind, args.targets)
    roles = ("policy", "value", "reward") if algo != "rloo" else ("policy", "reward")
    gc = args.kind.endswith(GC)
    model = PerlModel(base, roles=roles, lora=lora, tokenizer=tok, gradient_checkpointing=gc)
    model.heads.to(args.device)
    k = 2 if algo == "rloo" else 1
    cfg = PolicyConfig(
        algorithm=algo,
        batch_size=args.batch // k,
        samples_per_prompt=k,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        lr=1e-5 if lora is None else 1e-4,
        ppo_epochs=1,
    )
    g = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(3, min(vocab, 4000), (args.seq - args.new_tokens,), generator=g).tolist()
    ]
    trainer = PolicyTrainer(model, tok, [{"prompt": "x"}], config=cfg)
    trainer.prompt_ids, trainer.prompt_texts = prompts * 4, ["x"] * 4
    times = []
    for step in range(args.steps + 1):
        _sync(args.device)
        t0 = _clock()
        trainer.step()
        _sync(args.device)
        if step:
            times.append(_since(t0))
    sizes.update(param_sizes([model], getattr(trainer, "optimizer", None)))
    return times


def run_trl(args, sizes: dict) -> list[tuple[float, float]]:
    """TRL's trainers, LoRA rank 8 on the same targets, same model, batch and lengths; step
    times from a Trainer callback."""
    from datasets import Dataset
    from peft import LoraConfig
    from perl_rlhf.lora import resolve_targets
    from transformers import TrainerCallback

    times: list[tuple[float, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            _sync(args.device)
            self.t0 = _clock()

        def on_step_end(self, *a, **k):
            _sync(args.device)
            times.append(_since(self.t0))

    common = dict(
        output_dir=str(Path(args.workdir) / args.kind),
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + 1,
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        use_cpu=not args.device.startswith("cuda"),
        bf16=args.dtype == "bfloat16",
        learning_rate=1e-4,
        dataloader_num_workers=0,
    )
    others = []  # models outside the trainer's (TRL's reward model for RLOO)
    if args.kind == "trl_reward":
        # TRL lives in its own benchmark environment (--trl-site), not this package's.
        from trl import RewardConfig, RewardTrainer  # pyright: ignore[reportMissingImports]

        model, tok = load(args.model, args.device, args.dtype, head=True)
        peft_config = LoraConfig(
            r=8, lora_alpha=16, target_modules=resolve_targets(model, args.targets),
            bias="none", task_type="SEQ_CLS",
        )  # fmt: skip
        half = args.seq // 2 - 2  # prompt + response + end token fit in args.seq
        rows = [
            {"prompt": random_text(tok, half, 3 * i), "chosen": random_text(tok, half, 3 * i + 1),
             "rejected": random_text(tok, half, 3 * i + 2)}
            for i in range(args.batch * (args.steps + 1))
        ]  # fmt: skip
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common, max_length=args.seq),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[StepTimer()],
        )
    else:
        from trl import RLOOConfig, RLOOTrainer  # pyright: ignore[reportMissingImports]

        model, tok = load(args.model, args.device, args.dtype)
        reward, _ = load(args.model, args.device, args.dtype, head=True)
        others.append(reward)
        peft_config = LoraConfig(
            r=8, lora_alpha=16, target_modules=resolve_targets(model, args.targets), bias="none"
        )
        rows = [{"prompt": random_text(tok, args.seq - args.new_tokens, i)} for i in range(64)]
        config = RLOOConfig(
            **common,
            num_generations=2,
            max_completion_length=args.new_tokens,
            beta=0.05,
            generation_kwargs={"min_new_tokens": args.new_tokens},
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=reward,
            reward_processing_classes=tok,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[StepTimer()],
        )
    trainer.train()
    sizes.update(param_sizes([trainer.model, *others], trainer.optimizer))
    return times[1:]


def run_configs(args, kinds: list[str], extra_env: dict[str, str] | None = None) -> list[dict]:
    """Run every configuration ``args.rounds`` times, interleaved, each in a fresh process."""
    rows = []
    for rnd in range(args.rounds):
        for kind in kinds:
            env = {**os.environ, **(extra_env if kind.startswith("trl_") and extra_env else {})}
            cmd = [sys.executable, str(Path(sys.argv[0]).resolve()), "--child", kind]
            cmd += [a for a in sys.argv[1:] if a != "--child"]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=args.timeout
            )
            line = next(
                (ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None
            )
            if proc.returncode != 0 or line is None:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"round {rnd} {kind}: failed: {err}", flush=True)
                rows.append({"kind": kind, "round": rnd, "status": f"error: {err[:200]}"})
                continue
            row = {**json.loads(line), "round": rnd, "status": "ok"}
            row["process_seconds"] = round(time.perf_counter() - t0, 1)
            print(
                f"round {rnd} {kind}: peak {row['peak_anon_mib']:.0f} MiB anon"
                + (f", {row['peak_cuda_mib']:.0f} MiB cuda" if row["peak_cuda_mib"] != "" else "")
                + f", step {row['step_ms']:.0f} ms",
                flush=True,
            )
            rows.append(row)
    return rows


def add_args(p) -> None:
    p.add_argument("--child", default=None, help=argparse_suppress())
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--steps", type=int, default=1, help="timed steps per process (+1 warm-up)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=4)
    p.add_argument("--targets", default="attention")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--workdir", default="/tmp/perl-rlhf-bench")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated configurations, or 'all' (default: a quick set)",
    )


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS
