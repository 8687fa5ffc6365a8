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
    """``part``: ``"calibration"`` or ``"evaluation"`` (disjoint topic sets)."""
    from pydoc_data.topics import topics

    names = CALIBRATION_TOPICS if part == "calibration" else EVALUATION_TOPICS
    return "\n\n".join(topics[n] for n in names if n in topics)
