"""Paths, URLs and atomic commits on any Hadoop filesystem (file://, hdfs://, s3a://).

Committed output is complete or absent: everything is written into a hidden staging
folder beside the target, renamed into place, and marked with ``_SUCCESS`` last.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from .errors import InputError

SUCCESS = "_SUCCESS"


def to_url(path: str) -> str:
    """A local path becomes an absolute ``file://`` URL; URLs with a scheme are kept."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:
        return path.rstrip("/")
    return "file://" + os.path.abspath(os.path.expanduser(path))


def local_path(url: str) -> str | None:
    """The local filesystem path of a ``file://`` URL or plain path, else ``None``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return os.path.abspath(parsed.path if parsed.scheme else url)
    return None


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


class HadoopFs:
    """Thin wrapper over ``org.apache.hadoop.fs.FileSystem`` through the driver's JVM."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, url: str):
        path = self._jvm.org.apache.hadoop.fs.Path(url)
        return path.getFileSystem(self._conf), path

    def exists(self, url: str) -> bool:
        fs, path = self._fs(url)
        return bool(fs.exists(path))

    def is_dir(self, url: str) -> bool:
        fs, path = self._fs(url)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def size(self, url: str) -> int:
        fs, path = self._fs(url)
        return int(fs.getFileStatus(path).getLen())

    def delete(self, url: str) -> None:
        fs, path = self._fs(url)
        if fs.exists(path):
            fs.delete(path, True)

    def list(self, url: str) -> list[str]:
        """URLs of the entries of a folder."""
        fs, path = self._fs(url)
        return [str(status.getPath().toString()) for status in fs.listStatus(path)]

    def mkdirs(self, url: str) -> None:
        fs, path = self._fs(url)
        fs.mkdirs(path)

    def rename(self, src: str, dst: str) -> None:
        fs, src_path = self._fs(src)
        _, dst_path = self._fs(dst)
        if not fs.rename(src_path, dst_path):
            raise OSError(f"could not rename {src} to {dst}")

    def write_text(self, url: str, text: str) -> None:
        fs, path = self._fs(url)
        out = fs.create(path, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, url: str) -> str:
        fs, path = self._fs(url)
        stream = fs.open(path)
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8")
            )
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()

    def copy_from_local(self, local: str, url: str) -> None:
        fs, path = self._fs(url)
        fs.copyFromLocalFile(False, True, self._jvm.org.apache.hadoop.fs.Path(local), path)

    def copy_to_local(self, url: str, local: str) -> None:
        fs, path = self._fs(url)
        fs.copyToLocalFile(False, path, self._jvm.org.apache.hadoop.fs.Path(local), True)


def is_committed(fs: HadoopFs, url: str) -> bool:
    """True when ``url`` is a folder that was committed (holds ``_SUCCESS``)."""
    return fs.exists(join(url, SUCCESS))


def check_output(fs: HadoopFs, url: str, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse to replace an existing output unless asked; say what to do."""
    if fs.exists(url) and not overwrite:
        state = "a complete result" if is_committed(fs, url) else "an incomplete result"
        raise InputError(
            f"{url} already exists ({state}); pass {flag} to replace it, or choose another path."
        )


@contextmanager
def atomic_dir(fs: HadoopFs, url: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a staging URL; on success move it to ``url`` and write ``_SUCCESS``.

    On any error the staging folder is removed and an existing ``url`` is left untouched.
    """
    check_output(fs, url, overwrite)
    parent, name = url.rstrip("/").rsplit("/", 1)
    token = uuid.uuid4().hex[:12]
    staging = join(parent, f".{name}.tmp-{token}")
    fs.mkdirs(staging)
    try:
        yield staging
    except BaseException:
        fs.delete(staging)
        raise
    old = None
    if fs.exists(url):
        old = join(parent, f".{name}.old-{token}")
        fs.rename(url, old)
    fs.rename(staging, url)
    fs.write_text(join(url, SUCCESS), "")
    if old:
        fs.delete(old)
