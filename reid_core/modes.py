"""Switch modules to eval mode for a while and give every sub-module its own mode back.

``model.train(was_training)`` after an evaluation sets *every* sub-module to the top-level
flag, which silently undoes a deliberate mix: QAConv 2.1 keeps the backbone's BatchNorm in eval
mode while the head trains (Liao & Shao 2022). :func:`eval_mode` records each sub-module's flag
and restores exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*modules: object) -> Iterator[None]:
    """Put the given modules (non-modules are ignored) in eval mode; restore every flag after.

    Example:
        >>> with eval_mode(model, matcher):
        ...     scores = matcher(model(x).feature_map, ...)
    """
    saved = [(sub, sub.training) for m in modules if isinstance(m, nn.Module) for sub in m.modules()]
    try:
        for m in modules:
            if isinstance(m, nn.Module):
                m.eval()
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag
