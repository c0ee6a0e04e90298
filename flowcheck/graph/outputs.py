"""An op node's ``outputs``: its output tensors described as ``"float32[2,3]"``, when first read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

__all__ = ["Outputs"]


class Outputs(Sequence[str]):
    """An op node's ``outputs``: its output tensors as ``"float32[2,3]"`` strings, described when first read.

    Only a drawing or an export reads them, for the few ops it shows: describing every op's outputs
    while the graph is built cost a fifth of the build. Compares equal to the tuple of its strings.
    The outputs are those the op had when the graph was built: differentiating a function later
    (``Report.verify``) appends intermediates to its ``If``, ``Case``, ``While`` and call ops.
    """

    __slots__ = ("_count", "_op", "_texts")

    def __init__(self, op: Any) -> None:
        self._op = op
        self._count = len(op.outputs)
        self._texts: tuple[str, ...] | None = None

    def _described(self) -> tuple[str, ...]:
        if self._texts is None:
            self._texts = tuple([_describe(t) for t in self._op.outputs[:self._count]])
        return self._texts

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._described()[index]

    def __len__(self) -> int:
        return len(self._described())

    def __iter__(self) -> Iterator[str]:
        return iter(self._described())

    def __eq__(self, other: object) -> bool:
        return self._described() == (tuple(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    def __hash__(self) -> int:
        return hash(self._described())

    def __repr__(self) -> str:
        return repr(self._described())


def _describe(tensor: Any) -> str:
    dims, unknown = tensor._shape  # noqa: SLF001 -- the C API's answer, without building a TensorShape
    key = (tensor.dtype, None if unknown else tuple(dims))
    found = _DESCRIPTIONS.get(key)
    if found is None:
        dtype, dims = key
        text = "?" if dims is None else ",".join("?" if d is None else str(d) for d in dims)
        found = f"{dtype.name}[{text}]"
        if len(_DESCRIPTIONS) < 65536:
            _DESCRIPTIONS[key] = found
    return found


# "float32[2,3]" per dtype and shape seen (a model's tensors share a few).
_DESCRIPTIONS: dict[tuple[Any, Any], str] = {}
