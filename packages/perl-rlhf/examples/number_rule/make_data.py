"""Builds the number-rule preference data from SmolLM2-135M-Instruct's own samples.

The rule a reader can check: **a response that contains a digit is preferred**. For every
prompt the model samples several short responses; each pair (one with a digit, one without) of
the same prompt (every combination) becomes a pairwise row (prompt / chosen / rejected, TRL's format) and every
response a binary row (prompt / completion / label). Prompts are split into train, held-out and
RL sets, so the reward model is evaluated on prompts it never saw.

RL prompts (``questions_rl.jsonl``, held out: ``questions_test.jsonl``) are questions to which a
year or a quantity is a natural answer part of the time ("When did people first use bees?",
"Tell me one fact about the history of bees."): SmolLM2 answers about a quarter to a third of
them with a digit (2% for the fact/sentence prompts above), so RL has rewarded samples to learn
from and room to raise the rate. The two sets share no topic.

    python packages/perl-rlhf/examples/number_rule/make_data.py   # a few minutes on 2 CPU cores
    python packages/perl-rlhf/examples/number_rule/make_data.py --questions   # RL prompts only
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch

HERE = Path(__file__).parent
TOPICS = [
    "apples", "the moon", "bicycles", "coffee", "the ocean", "libraries", "volcanoes", "chess",
    "rain", "bees", "trains", "pizza", "mountains", "the piano", "elephants", "bridges",
    "gardens", "football", "clocks", "deserts", "rivers", "owls", "bread", "castles",
    "submarines", "tea", "snow", "dolphins", "airports", "honey", "forests", "guitars",
    "lighthouses", "penguins", "museums", "cheese", "windmills", "tigers", "islands", "kites",
    "satellites", "markets", "wolves", "schools", "candles", "whales", "lemons", "bakeries",
]  # fmt: skip
TEMPLATES = ["Tell me one fact about {}.", "Write one sentence about {}."]
QUESTIONS = ["Tell me one fact about the history of {}.", "When did people first use {}?"]
DIGIT = re.compile(r"\d")


def main() -> None:
    from tensor_utils_dev.models import load_smollm2

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small batches: one thread avoids OpenMP contention on shared CPUs
    model, tok = load_smollm2()
    rng = random.Random(0)
    prompts = [t.format(topic) for topic in TOPICS for t in TEMPLATES]
    rng.shuffle(prompts)
    rows = []
    for lo in range(0, len(prompts), 16):
        chunk = prompts[lo : lo + 16]
        msgs = [[{"role": "user", "content": p}] for p in chunk]
        texts = [
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs
        ]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(  # pyright: ignore[reportAttributeAccessIssue]
                **enc, do_sample=True, temperature=1.0, max_new_tokens=24,
                num_return_sequences=6, pad_token_id=tok.pad_token_id,
            )  # fmt: skip
        resp = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, p in enumerate(chunk):
            rows.append({"prompt": p, "responses": [r.strip() for r in resp[i * 6 : (i + 1) * 6]]})
        print(f"{lo + len(chunk)}/{len(prompts)} prompts", flush=True)
    n = len(rows)
    splits = {"train": rows[: n // 2], "test": rows[n // 2 : 3 * n // 4], "rl": rows[3 * n // 4 :]}
    for name, part in splits.items():
        pairs, binary = [], []
        for row in part:
            conv = [{"role": "user", "content": row["prompt"]}]
            good = [r for r in row["responses"] if r and DIGIT.search(r)]
            bad = [r for r in row["responses"] if r and not DIGIT.search(r)]
            pairs += [  # every (with digit, without) pair of the prompt's responses
                {"prompt": conv, "chosen": g, "rejected": b} for g in good for b in bad
            ]
            binary += [{"prompt": conv, "completion": r, "label": r in good} for r in good + bad]
        write(HERE / f"pairs_{name}.jsonl", pairs)
        write(HERE / f"binary_{name}.jsonl", binary)
        write(
            HERE / f"prompts_{name}.jsonl",
            [{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in part],
        )
        rate = sum(b["label"] for b in binary) / max(1, len(binary))
        print(f"{name}: {len(part)} prompts, {len(pairs)} pairs, digit rate {rate:.2f}")


def write_questions() -> None:
    """RL prompts: both question templates over half of the topics, held-out over the rest."""
    rng = random.Random(0)
    topics = list(TOPICS)
    rng.shuffle(topics)
    for name, part in (("rl", topics[:24]), ("test", topics[24:])):
        rows = [
            {"prompt": [{"role": "user", "content": q.format(t)}]} for t in part for q in QUESTIONS
        ]
        rng.shuffle(rows)
        write(HERE / f"questions_{name}.jsonl", rows)


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    import sys

    write_questions()
    if "--questions" not in sys.argv[1:]:
        main()
