"""Builds the length-rule preference data from SmolLM2-135M-Instruct's own samples.

The rule a reader can check: **an answer of at most 10 words is preferred** (``WordBand(1,
10)``: words are whitespace-separated; an empty answer scores 0). Every prompt is "Describe
<topic> in a few words."; SmolLM2 answers it with 3 to 30 words, 19-25% of the time
within the band. The model samples 6 answers per prompt at the RL settings (temperature 0.7,
at most 32 new tokens); each (in band, out of band) pair of one prompt's answers, at most 6 per
prompt, becomes a pairwise row (prompt / chosen / rejected, TRL's format) and every answer a
binary row (prompt / completion / label).

The 96 topics are split four ways, so that no topic is shared: reward-model training (32),
reward-model held-out pairs (16), RL prompts (24) and held-out RL prompts (24), on which the
rule reward is measured before and after RL.

    python packages/perl-rlhf/examples/length_rule/make_data.py   # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
from perl_rlhf.rules import WordBand  # noqa: E402

TOPICS = [
    "apples", "the moon", "bicycles", "coffee", "the ocean", "libraries", "volcanoes", "chess",
    "rain", "bees", "trains", "pizza", "mountains", "the piano", "elephants", "bridges",
    "gardens", "football", "clocks", "deserts", "rivers", "owls", "bread", "castles",
    "submarines", "tea", "snow", "dolphins", "airports", "honey", "forests", "guitars",
    "lighthouses", "penguins", "museums", "cheese", "windmills", "tigers", "islands", "kites",
    "satellites", "markets", "wolves", "schools", "candles", "whales", "lemons", "bakeries",
    "thunderstorms", "maps", "umbrellas", "rockets", "glaciers", "violins", "parrots", "tunnels",
    "orchards", "telescopes", "canoes", "spiders", "stars", "paper", "mirrors",
    "cities", "rainbows", "horses", "carpets", "caves", "bamboo", "the sun", "fireflies",
    "bookshops", "ferries", "cactuses", "lakes", "potatoes", "typewriters", "sailboats",
    "butterflies", "bells", "hedgehogs", "waterfalls", "lanterns", "frogs", "chocolate",
    "meadows", "harbors", "camels", "keys", "puzzles", "storms", "oak trees", "eagles", "soup",
    "compasses", "fountains",
]  # fmt: skip
TEMPLATE = "Describe {} in a few words."
RULE = WordBand(1, 10)
SAMPLES, MAX_NEW_TOKENS, TEMPERATURE, PAIRS_PER_PROMPT = 6, 32, 0.7, 6


def conversation(topic: str) -> list[dict]:
    return [{"role": "user", "content": TEMPLATE.format(topic)}]


def main() -> None:
    from tensor_utils_dev.models import load_smollm2

    assert len(set(TOPICS)) == 96, len(set(TOPICS))
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small batches: one thread avoids OpenMP contention on shared CPUs
    rng = random.Random(0)
    topics = list(TOPICS)
    rng.shuffle(topics)
    splits = {
        "train": topics[:32],
        "test": topics[32:48],
        "rl": topics[48:72],
        "rl_test": topics[72:],
    }
    for name in ("rl", "rl_test"):
        write(HERE / f"prompts_{name}.jsonl", [{"prompt": conversation(t)} for t in splits[name]])
    model, tok = load_smollm2()
    tok.padding_side = "left"
    for name in ("train", "test"):
        pairs, binary, inside, total = [], [], 0, 0
        part = splits[name]
        for lo in range(0, len(part), 8):
            chunk = part[lo : lo + 8]
            texts = [
                tok.apply_chat_template(conversation(t), tokenize=False, add_generation_prompt=True)
                for t in chunk
            ]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(  # pyright: ignore[reportAttributeAccessIssue]
                    **enc, do_sample=True, temperature=TEMPERATURE, max_new_tokens=MAX_NEW_TOKENS,
                    num_return_sequences=SAMPLES, pad_token_id=tok.pad_token_id,
                )  # fmt: skip
            resp = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, topic in enumerate(chunk):
                answers = [r.strip() for r in resp[i * SAMPLES : (i + 1) * SAMPLES] if r.strip()]
                labels = RULE([""] * len(answers), answers)
                good = [a for a, y in zip(answers, labels, strict=True) if y]
                bad = [a for a, y in zip(answers, labels, strict=True) if not y]
                combos = [(g, b) for g in good for b in bad]
                rng.shuffle(combos)
                conv = conversation(topic)
                pairs += [
                    {"prompt": conv, "chosen": g, "rejected": b}
                    for g, b in combos[:PAIRS_PER_PROMPT]
                ]
                binary += [
                    {"prompt": conv, "completion": a, "label": bool(y)}
                    for a, y in zip(answers, labels, strict=True)
                ]
                inside, total = inside + len(good), total + len(answers)
            print(f"{name}: {lo + len(chunk)}/{len(part)} prompts", flush=True)
        write(HERE / f"pairs_{name}.jsonl", pairs)
        write(HERE / f"binary_{name}.jsonl", binary)
        print(f"{name}: {len(part)} prompts, {len(pairs)} pairs, in-band rate {inside / total:.2f}")


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
