"""A map step's task in Python: reads its split with `caisson.map.Split`
and answers `{"index": i, "keys": [...], "bytes": n, "words": n}`."""

from caisson import task
from caisson.map import Split


@task
def run(input: bytes) -> dict:
    split = Split.parse(input)
    keys = []
    size = 0
    words = 0
    for piece, data in split.read():
        keys.append(piece.key)
        size += len(data)
        words += len(data.split())
    return {"index": split.index, "keys": keys, "bytes": size, "words": words}
