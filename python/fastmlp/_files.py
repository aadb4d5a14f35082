"""File access shared by the model files, the data loaders and the CLI.

- :func:`open_regular`: open a file for reading only if it is a regular file
  (a FIFO, a device such as /dev/zero, or a folder is refused before it can
  block or flood the reader).
- :func:`atomic_write`: write a file through a temporary file beside it,
  flushed, fsynced and renamed over it; any exception removes the temporary
  file and leaves the previous file intact.
- :class:`NpyMembers`: read chosen ``.npy`` members of an ``.npz`` archive,
  checking each member's declared shape and size before decompressing it.
"""
from __future__ import annotations

import os
import secrets
import stat
import zipfile
from contextlib import contextmanager
from typing import IO, Any, Iterator

import numpy as np


class NotRegularFileError(ValueError):
    """A path that is not a regular file (FIFO, device, socket)."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str) -> IO[bytes]:
    """path opened for binary reading; a folder raises IsADirectoryError and
    anything else that is not a regular file raises NotRegularFileError, before
    the open could block (a FIFO) or read forever (/dev/zero)."""
    st = os.stat(path)  # FileNotFoundError / PermissionError as open() raises them
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a folder, not a file", path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{path}: {_kind(st.st_mode)}, not a regular file")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, the open cannot block
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path}: {_kind(mode)}, not a regular file")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def atomic_write(path: Any, text: bool = False) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as f: ...`` writes path atomically.

    The data goes to a temporary file in the folder of path's target (a
    symlink is written through, not replaced), which gets the mode of the file
    it replaces (or, for a new file, the mode open() would give it); at the end
    it is flushed, fsynced and renamed over the target. Any exception
    (KeyboardInterrupt included) removes the temporary file and propagates
    unchanged; the previous file stays as it was."""
    target = os.path.realpath(os.fspath(path))
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a folder", os.fspath(path))
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    # 0o666 as open() uses, so the umask applies; an existing file's mode is copied exactly below
    mode = 0o666 if st is None else stat.S_IMODE(st.st_mode)
    try:
        # no bare descriptor is ever held here: an interrupt at any point leaves nothing to close twice
        kw: dict[str, Any] = {"newline": "", "encoding": "utf-8"} if text else {}
        with open(tmp, "x" if text else "xb", opener=lambda p, flags: os.open(p, flags, mode), **kw) as f:
            if st is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:  # not created (or already renamed): nothing to remove
            pass
        raise
    try:  # make the rename itself durable; a folder that cannot be opened or synced is no error
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """np.savez's format (uncompressed .npy members), written so that an
    exception while writing propagates unchanged (np.savez's final close can
    replace a KeyboardInterrupt with "Can't close the ZIP file"): on failure
    the archive is abandoned, for the caller to delete."""
    zf = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
    try:
        for key, val in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(val), allow_pickle=False)
        zf.close()
    except BaseException:
        zf.fp = None  # abandoned: its close() (also from __del__) must not write into the broken archive
        raise


_NPY_MAGIC = b"\x93NUMPY"


class NpyMembers:
    """The ``.npy`` members of an .npz archive, read one at a time on demand.

    ``names`` maps the array names (member name without '.npy') to their
    ZipInfo. :meth:`read` checks the member's .npy header (dtype, shape, and
    that shape x itemsize is exactly the member's declared size) against the
    caller's expectations before decompressing anything, and then reads
    exactly the declared bytes. Errors are ValueError naming the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open_regular(path)
        try:
            self._zip = zipfile.ZipFile(self._f)
            self.names: dict[str, zipfile.ZipInfo] = {}
            for info in self._zip.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in self.names:
                    raise ValueError(f"{path}: the archive has two members named {info.filename!r}")
                self.names[key] = info
        except BaseException:
            self._f.close()
            raise

    def close(self) -> None:
        self._zip.close()
        self._f.close()

    def __enter__(self) -> "NpyMembers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def header(self, name: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
        """(dtype, shape, fortran_order, header length) from member name's .npy header."""
        info = self.names[name]
        with self._zip.open(info) as m:
            if m.read(6) != _NPY_MAGIC:
                raise ValueError(f"{self.path}: {name!r} is not a NumPy array (.npy) in the archive")
            m.seek(0)
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
            else:
                raise ValueError(f"{self.path}: {name!r} has .npy format version {version}, not 1.0 or 2.0")
            offset = m.tell()
        return dtype, shape, fortran, offset

    def read(self, name: str, shape: tuple[int, ...] | None = None, max_bytes: int | None = None,
             kinds: str = "biuf") -> np.ndarray:
        """Member name as an array, refused before decompression when its
        dtype kind is not in kinds, its shape is not the expected one, its data
        would exceed max_bytes, or the member's size is not header + data."""
        dtype, got, fortran, offset = self.header(name)
        if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"{self.path}: array {name!r} has dtype {dtype}, which is not allowed here")
        if shape is not None and tuple(got) != tuple(shape):
            raise ValueError(f"{self.path}: array {name!r} has shape {tuple(got)}, expected {tuple(shape)}")
        nbytes = int(np.prod(got, dtype=object)) * dtype.itemsize
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"{self.path}: array {name!r} declares {nbytes} bytes of data, more than this reader "
                             f"accepts ({max_bytes})")
        info = self.names[name]
        size = info.file_size
        ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}.get(info.compress_type)  # deflate's maximum
        if ratio is not None and size > info.compress_size * ratio + 1024:
            raise ValueError(f"{self.path}: array {name!r}: the archive member declares {size} bytes, more than its "
                             f"{info.compress_size} compressed bytes can hold")
        if size != offset + nbytes:
            raise ValueError(f"{self.path}: array {name!r}: its .npy header declares {offset + nbytes} bytes but "
                             f"the archive member holds {size}")
        a = np.empty(got, dtype=dtype, order="F" if fortran else "C")
        with self._zip.open(info) as m:
            m.read(offset)
            buf = memoryview(a.reshape(-1, order="A").view(np.uint8).data) if a.size else memoryview(b"")
            done = 0
            while done < nbytes:
                n = m.readinto(buf[done:])  # type: ignore[attr-defined]  # a ZipExtFile
                if not n:
                    raise ValueError(f"{self.path}: array {name!r} is truncated")
                done += n
            if m.read(1):  # also makes zipfile check the CRC
                raise ValueError(f"{self.path}: array {name!r} has more data than declared")
        return a

