"""Real English text available offline: the Python documentation topics that ship with the
standard library (``pydoc_data.topics``), split into a calibration part and a disjoint
evaluation part."""

from __future__ import annotations

CALIBRATION_TOPICS = ("assignment", "class", "compound", "exceptions", "function", "import",
                      "numbers", "specialnames", "types", "typesseq")  # fmt: skip
EVALUATION_TOPICS = ("atom-identifiers", "binary", "booleans", "bltin-code-objects", "comparisons",
                     "context-managers", "customization", "execmodel", "formatstrings",
                     "integers", "lambda", "naming", "operator-summary", "string-methods")  # fmt: skip


def stdlib_text(part: str = "calibration") -> str:
    """``part``: ``"calibration"`` or ``"evaluation"`` (disjoint topic sets); the calibration
    part lists ``CALIBRATION_TOPICS`` first, then every other topic outside the evaluation set
    (about 87k SmolLM2 tokens in all), so a longer calibration reads more distinct text."""
    from pydoc_data.topics import topics

    if part != "calibration":
        return "\n\n".join(topics[n] for n in EVALUATION_TOPICS if n in topics)
    rest = sorted(set(topics) - set(CALIBRATION_TOPICS) - set(EVALUATION_TOPICS))
    return "\n\n".join(topics[n] for n in (*CALIBRATION_TOPICS, *rest) if n in topics)
