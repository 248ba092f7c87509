"""Object stores the operator granted to this run, opened by label.

Reads and writes stream: `lines`, `open_read` and `open_write` keep a few
kilobytes in the task however large the object is. Many small objects are
read fastest by `read_many`, which keeps several requests in flight on the
host and yields the objects in order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable, Iterator, Union

from ._wit import Err, Ok
from ._wit import objects as _objects
from ._wit import streams as _streams

from .errors import CaissonError, NotFound, OtherError, call, from_wit

# The largest write one `output-stream.write` may take is what
# `check-write` allows; reads ask for this much at a time.
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ObjectMeta:
    key: str
    size: int
    #: Microseconds since the Unix epoch.
    last_modified: int
    etag: str | None
    version: str | None = None
    content_type: str | None = None


def _meta(m: _objects.ObjectMeta) -> ObjectMeta:
    return ObjectMeta(m.key, m.size, m.last_modified, m.etag, m.version, m.content_type)


class Store:
    """An open object store. Keys are `/`-separated paths inside it."""

    def __init__(self, handle: _objects.Store, label: str):
        self._handle = handle
        self.label = label

    @classmethod
    def open(cls, label: str) -> "Store":
        """Opens the store granted under `label`; raises `AccessDenied` if
        this run was not granted it."""
        return cls(call(_objects.open, label), label)

    def read(self, key: str) -> bytes:
        """The whole object. Large objects: use `lines` or `open_read`."""
        return call(self._handle.get, key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return call(self._handle.get_range, key, offset, length)

    def read_text(self, key: str, encoding: str = "utf-8") -> str:
        return self.read(key).decode(encoding)

    def write(self, key: str, data: bytes | str) -> ObjectMeta:
        """Writes a whole object at once, replacing any object at `key`."""
        if isinstance(data, str):
            data = data.encode()
        return _meta(call(self._handle.put, key, bytes(data), None))

    def head(self, key: str) -> ObjectMeta:
        return _meta(call(self._handle.head, key))

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        call(self._handle.delete, key)

    def copy(self, source: str, destination: str) -> None:
        call(self._handle.copy, source, destination)

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectMeta]:
        """Every object under `prefix`, in key order, fetched a page at a time."""
        token: str | None = None
        while True:
            page = call(self._handle.list, prefix, None, token, page_size)
            for m in page.objects:
                yield _meta(m)
            token = page.next_page_token
            if token is None:
                return

    def read_many(
        self,
        keys: Iterable[str] | None = None,
        *,
        prefix: str | None = None,
        errors: str = "raise",
    ) -> Iterator[tuple[str, Union[bytes, CaissonError]]]:
        """Whole objects, as `(key, data)` pairs in the order of `keys`, or
        of every object under `prefix` in key order. The host keeps several
        requests in flight (as many as the operator configured for the
        store) and reads ahead while the task works::

            for key, data in store.read_many(prefix="logs/2024/"):
                ...

        An object that cannot be read (missing, or too large for a whole
        read: use `lines` or `open_read` for those) raises its error, with
        the key in `.key`, where it comes in the order. With
        `errors="yield"` the error is yielded as `data` instead and the
        objects after it still arrive."""
        if (keys is None) == (prefix is None):
            raise ValueError("read_many takes `keys` or `prefix`, not both")
        if errors not in ("raise", "yield"):
            raise ValueError(f"errors must be 'raise' or 'yield', not {errors!r}")
        for key, data in self._read_many(keys, prefix):
            if isinstance(data, CaissonError) and errors == "raise":
                raise data
            yield key, data

    def _read_many(
        self, keys: Iterable[str] | None, prefix: str | None
    ) -> Iterator[tuple[str, Union[bytes, CaissonError]]]:
        if keys is not None:
            reader = call(self._handle.read_many, list(keys))
        else:
            reader = call(self._handle.read_prefix, prefix)
        try:
            while True:
                entry = call(reader.next)
                if entry is None:
                    return
                key, result = entry
                if isinstance(result, Ok):
                    yield key, result.value
                else:
                    failure = from_wit(result.value)
                    failure.key = key
                    yield key, failure
        finally:
            # Stops the host's requests still in flight.
            reader.__exit__(None, None, None)

    def open_read(self, key: str) -> io.BufferedReader:
        """A binary file object that streams the object."""
        stream = call(self._handle.reader, key)
        return io.BufferedReader(_Reader(stream), buffer_size=_CHUNK)

    def lines(self, key: str, encoding: str = "utf-8") -> Iterator[str]:
        """The object's lines, without their line endings, streamed."""
        with io.TextIOWrapper(self.open_read(key), encoding=encoding, newline=None) as text:
            for line in text:
                yield line.rstrip("\n")

    def open_write(self, key: str) -> "Writer":
        """A streamed upload. Nothing appears at `key` until the writer is
        closed; leaving its `with` block by an exception aborts it."""
        return Writer(call(self._handle.writer, key, None))

    def close(self) -> None:
        self._handle.__exit__(None, None, None)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Reader(io.RawIOBase):
    def __init__(self, stream: _streams.InputStream):
        self._stream: _streams.InputStream | None = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._stream is None:
            return 0
        try:
            data = self._stream.blocking_read(len(buffer))
        except Err as e:
            if isinstance(e.value, _streams.StreamError_Closed):
                self.close()
                return 0
            raise _stream_failure(e.value) from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.__exit__(None, None, None)
            self._stream = None
        super().close()


class Writer:
    """An upload in progress; use it as a context manager."""

    def __init__(self, handle: _objects.Writer):
        self._handle: _objects.Writer | None = handle
        self._body: _streams.OutputStream | None = call(handle.body)
        self.meta: ObjectMeta | None = None

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        if self._body is None:
            raise ValueError("write to a closed writer")
        view = memoryview(data)
        while view:
            try:
                allowed = self._body.check_write()
                if allowed == 0:
                    pollable = self._body.subscribe()
                    pollable.block()
                    pollable.__exit__(None, None, None)
                    continue
                n = min(allowed, len(view), _CHUNK)
                self._body.write(bytes(view[:n]))
            except Err as e:
                raise _stream_failure(e.value) from None
            view = view[n:]
        return len(data)

    def close(self) -> ObjectMeta:
        """Completes the upload and returns the new object's metadata."""
        if self.meta is not None:
            return self.meta
        if self._body is None or self._handle is None:
            raise ValueError("the upload was aborted")
        try:
            self._body.blocking_flush()
        except Err as e:
            raise _stream_failure(e.value) from None
        self._body.__exit__(None, None, None)
        self._body = None
        handle, self._handle = self._handle, None
        self.meta = _meta(call(_objects.Writer.finish, handle))
        return self.meta

    def abort(self) -> None:
        if self._body is not None:
            self._body.__exit__(None, None, None)
            self._body = None
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
            self._handle = None

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _stream_failure(error: _streams.StreamError) -> Exception:
    """The exception for a failed stream call. The host says what kind of
    failure it was when it knows (a broken connection is `backend`, so the
    run is retryable); otherwise it is `other`, not retryable, rather than
    risk retrying a deterministic failure such as an oversized upload."""
    if isinstance(error, _streams.StreamError_Closed):
        return OtherError("the stream was closed")
    kind = _objects.stream_error(error.value)
    if kind is not None:
        failure = from_wit(kind)
        failure.args = (f"object stream failed: {failure}",)
        return failure
    return OtherError(f"object stream failed: {error.value.to_debug_string()}")
