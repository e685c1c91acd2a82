"""Pairing the files of two folders: by relative file name (default) or by sorted order (StyleID's)."""

from __future__ import annotations

from typing import Literal

from percep_lightning.evaluation.errors import EvaluationError

__all__ = ["PAIR_BY", "PairBy", "pair_files"]

PairBy = Literal["name", "sorted"]
PAIR_BY: tuple[str, ...] = ("name", "sorted")
_SHOWN = 5


def pair_files(
    preds: list[str],
    others: list[str],
    *,
    by: PairBy = "name",
    names: tuple[str, str] = ("PRED_DIR", "TARGET"),
) -> list[tuple[str, str]]:
    """Match the files of two folders one to one.

    ``by="name"`` pairs files with the same relative path (``a/01.png`` with ``a/01.png``; the extension
    may differ, ``01.png`` with ``01.jpg``, as long as the match is unique). ``by="sorted"`` pairs the
    ``i``-th file of each sorted list, as StyleID's evaluation does.

    Args:
        preds: relative paths in the first folder, sorted.
        others: relative paths in the second folder, sorted.
        by: ``"name"`` or ``"sorted"``.
        names: how messages call the two folders.

    Returns:
        ``(pred_path, other_path)`` pairs in the order of ``preds``.

    Raises:
        EvaluationError: for an unknown ``by``, different counts, or (``by="name"``) files without a
            partner; the message gives both counts and the first unmatched names.

    Example:
        >>> pair_files(["1.png", "2.png"], ["1.jpg", "2.jpg"])
        [('1.png', '1.jpg'), ('2.png', '2.jpg')]
        >>> pair_files(["a.png", "b.png"], ["x.png", "y.png"], by="sorted")
        [('a.png', 'x.png'), ('b.png', 'y.png')]
    """
    if by not in PAIR_BY:
        raise EvaluationError(f"Expected `pair_by` to be one of {PAIR_BY}, but got {by!r}.")
    first, second = names
    if by == "sorted":
        if len(preds) != len(others):
            raise EvaluationError(
                f"Cannot pair by sorted order: {first} has {len(preds)} images and {second} has {len(others)}; "
                f"unmatched: {_preview(preds[len(others) :] or others[len(preds) :])}."
            )
        return list(zip(preds, others, strict=True))
    exact = set(others)
    by_stem: dict[str, list[str]] = {}
    for name in others:
        by_stem.setdefault(_stem(name), []).append(name)
    pairs, unmatched = [], []
    for name in preds:
        if name in exact:
            pairs.append((name, name))
            continue
        candidates = by_stem.get(_stem(name), [])
        if len(candidates) == 1:
            pairs.append((name, candidates[0]))
        else:
            unmatched.append(name)
    used = {other for _, other in pairs}
    if len(used) != len(pairs):
        raise EvaluationError(
            f"Cannot pair by name: several {first} files match the same {second} file (names differing only "
            "by extension); rename them or use --pair-by sorted."
        )
    unmatched_others = [name for name in others if name not in used]
    if unmatched or unmatched_others or len(preds) != len(others):
        parts = []
        if unmatched:
            parts.append(f"{first} files without a partner: {_preview(unmatched)}")
        if unmatched_others:
            parts.append(f"{second} files without a partner: {_preview(unmatched_others)}")
        raise EvaluationError(
            f"Cannot pair by name: {first} has {len(preds)} images and {second} has {len(others)}; "
            + "; ".join(parts)
            + " (use --pair-by sorted to pair by sorted order)."
        )
    return pairs


def _stem(name: str) -> str:
    head, dot, _ = name.rpartition(".")
    return head if dot else name


def _preview(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")
