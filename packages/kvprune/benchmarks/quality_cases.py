"""The prompts of the quality benchmark, shared by ``bench_quality.py`` (kvprune) and
``bench_kvpress.py`` (kvpress, in its own environment): no kvprune import here.

Text is English documentation shipped with Python (``pydoc_data.topics``). A needle case hides
``The secret passcode is NNNN.`` at a depth of a haystack of ``ctx`` tokens and asks for it in
the model's chat template, the assistant turn starting with "The secret passcode is" (so a few
greedy tokens carry the number); a perplexity case is a document's first ``ctx`` tokens followed by
``cont`` tokens to score.
"""

from __future__ import annotations

NEEDLE_TOKENS = 6
ANSWER_PREFIX = "The secret passcode is"
HAYSTACK_TOPICS = ("assignment", "class", "compound", "exceptions", "specialnames", "types")


def needle_code(ctx: int, depth: float, case: int) -> str:
    return str(1000 + (7919 * (case + 1) + 104729 * int(depth * 100) + ctx) % 9000)


def needle_prompt(tokenizer, ctx: int, depth: float, code: str) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in HAYSTACK_TOPICS)
    ids = tokenizer(text)["input_ids"][:ctx]
    hay = tokenizer.decode(ids)
    at = int(len(hay) * depth)
    cut = hay.rfind("\n", 0, at) if 0 < depth < 1 else at
    cut = cut if cut > 0 else at
    needle = f"\nThe secret passcode is {code}. Remember it.\n"
    body = hay[:cut] + needle + hay[cut:]
    question = "\n\nWhat is the secret passcode? Answer with the number only."
    messages = [{"role": "user", "content": body + question}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return chat + ANSWER_PREFIX  # the answer starts in the prompt: only the number is decoded


def needle_cases(contexts, depths, per_depth):
    """``(ctx, depth, case, code)`` for every cell of the sweep."""
    return [
        (ctx, d, c, needle_code(ctx, d, c))
        for ctx in contexts
        for d in depths
        for c in range(per_depth)
    ]


def documents(tokenizer, ctx: int, count: int, cont: int) -> list[list[int]]:
    """The ``count`` longest documents with at least ``ctx + cont`` tokens, cut there."""
    from pydoc_data.topics import topics

    docs: list[list[int]] = []
    if count <= 0:
        return docs
    for key in sorted(topics, key=lambda k: -len(topics[k])):
        if key in HAYSTACK_TOPICS:
            continue
        ids = tokenizer(topics[key])["input_ids"]
        if len(ids) >= ctx + cont:
            docs.append(ids[: ctx + cont])
        if len(docs) == count:
            break
    return docs
