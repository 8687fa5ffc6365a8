"""``perl-rlhf train-reward`` and ``perl-rlhf train-policy``.

Bad input ends with one line on stderr (exit 2); Ctrl-C / SIGTERM exit 130 / 143 and leave no
half-written output (adapters are written to a temporary directory and renamed when complete).
Data parallel: ``torchrun --nproc-per-node N -m perl_rlhf.cli ...`` or ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .errors import PerlError

EXIT_BAD_INPUT = 2


def _lora_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA")
    g.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    g.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    g.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    g.add_argument(
        "--targets",
        default="attention",
        help="'attention' (PERL), 'all-linear', or comma-separated module names",
    )
    g.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (less memory, more compute)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base causal LM directory (transformers)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=None, help="default: the context limit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-progress", action="store_true")
    _lora_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perl-rlhf", description="LoRA reward models and LoRA RL on one frozen base model."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("train-reward", help="train a reward adapter + score head")
    r.add_argument(
        "--train", required=True, help="JSONL: prompt/chosen/rejected or prompt/completion/label"
    )
    r.add_argument("--eval", default=None, help="held-out JSONL in the same format")
    r.add_argument("--objective", choices=("pairwise", "binary"), default="pairwise")
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--max-steps", type=int, default=None)
    r.add_argument(
        "--class-weight", default=None, help="binary: 'balanced' or a positive-class weight"
    )
    r.add_argument("--skip-long", action="store_true", help="drop rows over --max-length")
    _common(r)
    p = sub.add_parser("train-policy", help="RL of a policy adapter against a reward adapter")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' column")
    p.add_argument("--reward", required=True, help="directory written by train-reward")
    p.add_argument("--algorithm", choices=("reinforce", "rloo", "ppo"), default="reinforce")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples-per-prompt", type=int, default=None, help="default 1 (RLOO: 4)")
    p.add_argument("--beta", type=float, default=0.05, help="KL coefficient (PERL: 0.05)")
    p.add_argument("--kl-mode", choices=("token", "sequence"), default="token")
    p.add_argument("--whiten-rewards", action="store_true")
    p.add_argument("--reward-clip", type=float, default=None)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--plot", default=None, help="PNG of reward, KL, entropy, length per step")
    _common(p)
    return parser


def _lora_spec(args):
    from .lora import LoraSpec

    if args.full:
        return None
    targets = (
        args.targets
        if args.targets in ("attention", "all-linear")
        else tuple(t for t in args.targets.split(",") if t)
    )
    return LoraSpec(rank=args.rank, alpha=args.alpha, dropout=args.dropout, targets=targets)


def _train_reward(args) -> dict:
    from .model import PerlModel, load_base
    from .reward import RewardConfig, train_reward_model

    config = RewardConfig(
        objective=args.objective,
        lr=args.lr or (1e-5 if args.full else 1e-4),
        epochs=args.epochs,
        batch_size=args.batch_size,
        class_weight=_class_weight(args.class_weight),
        max_length=args.max_length,
        skip_long=args.skip_long,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    base, tokenizer = load_base(args.model)
    model = PerlModel(
        base,
        roles=("reward",),
        lora=_lora_spec(args),
        tokenizer=tokenizer,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    result = train_reward_model(
        model,
        tokenizer,
        args.train,
        config=config,
        eval_data=args.eval,
        progress=not args.no_progress,
    )
    summary = {
        "out": str(Path(args.out)),
        "objective": args.objective,
        "steps": len(result.history),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "eval": result.metrics,
        "skipped_rows": result.skipped_rows,
    }
    if _is_main():
        model.save("reward", args.out, extra={"objective": args.objective, "eval": result.metrics})
    return summary


def _class_weight(value):
    if value is None or value == "balanced":
        return value
    try:
        return float(value)
    except ValueError:
        raise PerlError(f"--class-weight must be 'balanced' or a number, got {value!r}") from None


def _train_policy(args) -> dict:
    from .model import PerlModel, load_base
    from .policy import PolicyConfig, PolicyTrainer, plot_log, write_log

    k = args.samples_per_prompt or (4 if args.algorithm == "rloo" else 1)
    config = PolicyConfig(
        algorithm=args.algorithm,
        steps=args.steps,
        batch_size=args.batch_size,
        samples_per_prompt=k,
        lr=args.lr or (1e-5 if args.full else 1e-4),
        beta=args.beta,
        kl_mode=args.kl_mode,
        whiten_rewards=args.whiten_rewards,
        reward_clip=args.reward_clip,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        max_length=args.max_length,
        seed=args.seed,
    )
    roles = ("policy", "value", "reward") if config.uses_value else ("policy", "reward")
    base, tokenizer = load_base(args.model)
    model = PerlModel(
        base,
        roles=roles,
        lora=_lora_spec(args),
        tokenizer=tokenizer,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    model.load("reward", args.reward)
    trainer = PolicyTrainer(model, tokenizer, args.prompts, config=config)
    result = trainer.train(progress=not args.no_progress)
    out = Path(args.out)
    if _is_main():
        model.save("policy", out / "policy", extra={"algorithm": args.algorithm})
        if config.uses_value:
            model.save("value", out / "value")
        write_log(result.history, out / "log.jsonl")
        if args.plot:
            plot_log(result.history, args.plot, title=f"{args.algorithm}, beta {args.beta}")
    last = result.history[-1]
    return {
        "out": str(out),
        "algorithm": args.algorithm,
        "steps": len(result.history),
        "first": {k: result.history[0][k] for k in ("reward", "kl", "entropy", "response_length")},
        "last": {k: last[k] for k in ("reward", "kl", "entropy", "response_length")},
    }


def _is_main() -> bool:
    from .distributed import world

    return world()[0] == 0


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        from transformers.utils import logging as hf_logging

        from .distributed import init_from_env

        hf_logging.disable_progress_bar()  # stderr keeps our own progress bar and errors only

        init_from_env()
        summary = _train_reward(args) if args.command == "train-reward" else _train_policy(args)
    except PerlError as e:
        print(f"perl-rlhf: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"perl-rlhf: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("perl-rlhf: interrupted; no partial output was left", file=sys.stderr)
        return 130
    if _is_main():
        if args.json:
            print(json.dumps(summary))
        else:
            for k, v in summary.items():
                print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
