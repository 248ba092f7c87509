"""Splits of a workflow's `map` step.

A map step runs its task once per split of the objects under a prefix;
each run's input is its split, as JSON::

    {"store": "raw", "index": 0, "objects": [
        {"key": "logs/a", "size": 812},
        {"key": "logs/big", "size": 300000000, "range": [0, 134217728]}
    ]}

`range` (`[start, end)`) appears only when the step declares
`"ranges": true`, for objects larger than its `max_split_bytes`.
`Split.parse(input)` reads it; iterating `split.read()` gives
`(piece, data)` pairs in order, whole objects read with several requests
in flight (`Store.read_many`)::

    from caisson import task
    from caisson.map import Split

    @task
    def run(input: bytes) -> dict:
        split = Split.parse(input)
        return {"bytes": sum(len(data) for _, data in split.read())}
"""

import json
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from .errors import CaissonError, InvalidInput
from .objects import Store


@dataclass(frozen=True)
class Piece:
    """A whole object, or the byte range `[start, end)` of one."""

    key: str
    size: int
    range: Optional[tuple[int, int]] = None

    def __len__(self) -> int:
        if self.range is None:
            return self.size
        return self.range[1] - self.range[0]


@dataclass(frozen=True)
class Split:
    """One split: the pieces one run reads, in key order."""

    store: str
    index: int
    objects: list[Piece]

    @classmethod
    def parse(cls, input: Union[bytes, str]) -> "Split":
        """The split in a map step's run input; `InvalidInput` otherwise."""
        try:
            doc = json.loads(input)
            pieces = [
                Piece(
                    key=o["key"],
                    size=int(o["size"]),
                    range=tuple(o["range"]) if o.get("range") is not None else None,
                )
                for o in doc["objects"]
            ]
            return cls(store=doc["store"], index=int(doc["index"]), objects=pieces)
        except (ValueError, TypeError, KeyError) as e:
            raise InvalidInput(f"the input is not a map split: {e!r}") from None

    @property
    def bytes(self) -> int:
        return sum(len(p) for p in self.objects)

    def read(
        self, errors: str = "raise"
    ) -> Iterator[tuple[Piece, Union[bytes, CaissonError]]]:
        """Every piece with its bytes, in order: whole objects with several
        requests in flight, ranges one at a time as they come. A piece that
        cannot be read raises its error (or, with `errors="yield"`, comes
        with it as its data)."""
        if errors not in ("raise", "yield"):
            raise ValueError(f"errors must be 'raise' or 'yield', not {errors!r}")
        store = Store.open(self.store)
        whole = store.read_many(
            [p.key for p in self.objects if p.range is None], errors="yield"
        )
        for piece in self.objects:
            data: Union[bytes, CaissonError]
            if piece.range is not None:
                start, end = piece.range
                try:
                    data = store.read_range(piece.key, start, end - start)
                except CaissonError as e:
                    data = e
            else:
                _, data = next(whole)
            if isinstance(data, CaissonError) and errors == "raise":
                raise data
            yield piece, data
