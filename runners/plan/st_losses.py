"""Which sentence-transformers loss fits a dataset's shape, and why (importable without torch).

The planner shows the choice before launch; the sentence-transformers runner uses the same function, so
the plan and the run agree. ``columns`` is the role mapping of :func:`runners.data.detect_columns` for the
``embedding`` task (``anchor``/``positive``/``negative``, or ``text``/``text_pair``/``label``; the spellings
``text1``/``text2``/``score``, ``sentence1``/``sentence2`` are accepted too).

| data                         | loss                          |
|------------------------------|-------------------------------|
| (text, label)                | BatchHardTripletLoss          |
| (anchor, positive)           | MultipleNegativesRankingLoss  |
| (anchor, positive, negative) | TripletLoss                   |
| (text1, text2, score)        | CoSENTLoss                    |
| (text1, text2, label)        | ContrastiveLoss (2 classes), SoftmaxLoss (more) |

``runner_args.loss`` overrides the choice with any loss class name of ``sentence_transformers.losses``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runners.errors import UserError, did_you_mean

# The loss classes ftui can build with their default arguments (plus SoftmaxLoss, which it sizes itself).
KNOWN_LOSSES = (
    "BatchHardTripletLoss", "BatchAllTripletLoss", "BatchSemiHardTripletLoss", "BatchHardSoftMarginTripletLoss",
    "MultipleNegativesRankingLoss", "MultipleNegativesSymmetricRankingLoss", "CachedMultipleNegativesRankingLoss",
    "TripletLoss", "CoSENTLoss", "AnglELoss", "CosineSimilarityLoss", "ContrastiveLoss", "OnlineContrastiveLoss",
    "SoftmaxLoss", "MegaBatchMarginLoss",
)
# Which shape of data each loss takes: the inputs it reads and whether it needs a label/score column.
LOSS_SHAPES = {
    "BatchHardTripletLoss": "single", "BatchAllTripletLoss": "single", "BatchSemiHardTripletLoss": "single",
    "BatchHardSoftMarginTripletLoss": "single",
    "MultipleNegativesRankingLoss": "pairs", "MultipleNegativesSymmetricRankingLoss": "pairs",
    "CachedMultipleNegativesRankingLoss": "pairs", "MegaBatchMarginLoss": "pairs",
    "TripletLoss": "triplets",
    "CoSENTLoss": "scored_pairs", "AnglELoss": "scored_pairs", "CosineSimilarityLoss": "scored_pairs",
    "ContrastiveLoss": "labelled_pairs", "OnlineContrastiveLoss": "labelled_pairs", "SoftmaxLoss": "labelled_pairs",
}
SCORE_NAMES = ("score", "scores", "similarity", "sim", "relatedness", "similarity_score")
ROLE_ALIASES = {"text1": "text", "sentence1": "text", "sentence": "text", "text2": "text_pair",
                "sentence2": "text_pair", "score": "label", "scores": "label", "labels": "label"}


def normalise_roles(columns: dict[str, str]) -> dict[str, str]:
    """Role -> column with the accepted spellings folded onto anchor/positive/negative/text/text_pair/label."""
    out: dict[str, str] = {}
    for role, column in columns.items():
        if not column:
            continue
        key = ROLE_ALIASES.get(role, role)
        out.setdefault(key, column)
        if role in ("score", "scores"):
            out.setdefault("_score", column)
    return out


def is_score(column: str | None, values: Iterable[Any] | None = None) -> bool:
    """A similarity score (CoSENT) rather than a class label: named like one, or non-integer numbers."""
    if column and column.lower() in SCORE_NAMES:
        return True
    if values is None:
        return False
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        numbers.append(float(value))
    return bool(numbers) and any(not v.is_integer() for v in numbers)


def data_shape(columns: dict[str, str], label_values: Iterable[Any] | None = None) -> str:
    """single / pairs / triplets / scored_pairs / labelled_pairs, or a UserError for shapes no loss takes."""
    roles = normalise_roles(columns)
    if "anchor" in roles and "positive" in roles:
        return "triplets" if "negative" in roles else "pairs"
    if "text" in roles and "text_pair" in roles:
        if "label" not in roles:
            return "pairs"
        return "scored_pairs" if "_score" in roles or is_score(roles["label"], label_values) else "labelled_pairs"
    if "text" in roles and "label" in roles:
        if is_score(roles["label"], label_values):
            raise UserError(f"The data has one text column and a numeric score column ('{roles['label']}'): no "
                            "sentence-transformers loss trains on that. Give (text1, text2, score) pairs, or class "
                            "labels for (text, label).")
        return "single"
    found = ", ".join(f"{k}={v}" for k, v in columns.items()) or "none"
    raise UserError(f"sentence-transformers needs (text, label), (anchor, positive), (anchor, positive, negative), "
                    f"(text1, text2, score) or (text1, text2, label) columns; detected roles: {found}. Map them with "
                    "dataset.columns (e.g. columns: {anchor: question, positive: answer}).")


def _n_classes(label_values: Iterable[Any] | None) -> int | None:
    if label_values is None:
        return None
    return len(set(label_values))


def choose_loss(columns: dict[str, str], override: str | None = None,
                label_values: Iterable[Any] | None = None) -> tuple[str, str]:
    """(loss class name, one-line reason) for the data's column roles; ``override`` wins when given."""
    values = list(label_values) if label_values is not None else None
    if override:
        if override not in KNOWN_LOSSES:
            raise UserError(f"runner_args.loss '{override}' is not a loss ftui can build."
                            f"{did_you_mean(override, KNOWN_LOSSES)} Choose one of: {', '.join(KNOWN_LOSSES)}.")
        shape = data_shape(columns, values)
        if LOSS_SHAPES[override] != shape and not (shape == "triplets" and LOSS_SHAPES[override] == "pairs"):
            raise UserError(f"runner_args.loss {override} takes {LOSS_SHAPES[override].replace('_', ' ')} data, but the "
                            f"dataset has {shape.replace('_', ' ')} ({', '.join(f'{k}={v}' for k, v in columns.items())}).")
        return override, "set in runner_args.loss"
    shape = data_shape(columns, values)
    roles = normalise_roles(columns)
    if shape == "single":
        return "BatchHardTripletLoss", (f"(text, label) data: batch-hard triplets, texts with the same '{roles['label']}' "
                                        "are pulled together and the hardest other label pushed away")
    if shape == "pairs":
        return "MultipleNegativesRankingLoss", ("(anchor, positive) pairs: the other positives in the batch serve as "
                                                "negatives")
    if shape == "triplets":
        return "TripletLoss", "(anchor, positive, negative) triplets: anchor closer to positive than to negative"
    if shape == "scored_pairs":
        return "CoSENTLoss", f"(text1, text2, score) pairs: cosine similarities ranked like the '{roles['label']}' scores"
    n = _n_classes(values)
    if n is not None and n > 2:
        return "SoftmaxLoss", f"(text1, text2, label) pairs with {n} classes: a softmax classifier over the pair"
    return "ContrastiveLoss", "(text1, text2, label) pairs with a binary label: similar pairs close, dissimilar apart"
