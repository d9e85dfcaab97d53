"""Paths, URLs and atomic commits on any Hadoop filesystem (file://, hdfs://, s3a://).

Committed output is complete or absent: everything is written into a hidden staging
folder beside the target, marked with ``_SUCCESS`` and hvd-otto's marker, and renamed into
place by :func:`hvd_otto.common.commit.commit`, which checks the target again at that moment.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from . import commit as committing

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
        self._gateway = spark.sparkContext._gateway
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

    def move(self, src: str, dst: str) -> bool:
        """Rename ``src`` to a fresh name ``dst``; False when ``src`` does not exist."""
        fs, src_path = self._fs(src)
        return bool(fs.exists(src_path) and fs.rename(src_path, self._fs(dst)[1]))

    def move_no_replace(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst`` unless ``dst`` exists (atomic on HDFS); else False."""
        from py4j.protocol import Py4JJavaError

        jvm = self._jvm
        context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(
            jvm.java.net.URI(dst), self._conf)
        options = self._gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
        options[0] = jvm.org.apache.hadoop.fs.Options.Rename.NONE
        try:
            context.rename(self._fs(src)[1], self._fs(dst)[1], options)
        except Py4JJavaError as err:
            if "FileAlreadyExistsException" in str(err.java_exception.getClass().getName()):
                return False
            raise
        return True

    def first_line(self, url: str) -> str:
        fs, path = self._fs(url)
        stream = fs.open(path)
        try:
            return self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8")).readLine() or ""
        finally:
            stream.close()

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


def entries_for(fs: HadoopFs, url: str) -> tuple[committing.Entries, str]:
    """The filesystem operations for ``url`` and its name for them (a path when local)."""
    path = local_path(url)
    return (committing.LocalEntries(), path) if path is not None else (fs, url)


def check_output(fs: HadoopFs, url: str, overwrite: bool, flag: str = "--overwrite",
                 folder: bool = True) -> None:
    """Refuse to replace an existing output unless asked, and then only hvd-otto's own."""
    entries, target = entries_for(fs, url)
    committing.check_target(entries, target, overwrite, flag, folder)


def staging_url(url: str) -> str:
    """A fresh hidden name beside ``url`` to write its result into."""
    parent, name = url.rstrip("/").rsplit("/", 1)
    return join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def commit(fs: HadoopFs, staged: str, url: str, overwrite: bool) -> None:
    """Move the complete ``staged`` folder or file to ``url`` (see ``common.commit``)."""
    entries, target = entries_for(fs, url)
    source = entries_for(fs, staged)[1]
    if local_path(url) is not None and os.path.isdir(source):
        committing.remove_checksums(source)
    committing.commit(entries, source, target, overwrite)


@contextmanager
def atomic_dir(fs: HadoopFs, url: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a staging URL; on success mark it complete and commit it to ``url``.

    On any error (or interrupt) the staging folder is removed and ``url`` is left untouched.
    """
    check_output(fs, url, overwrite)
    staging = staging_url(url)
    fs.mkdirs(staging)
    try:
        yield staging
        fs.write_text(join(staging, committing.MARKER), committing.marker_text())
        fs.write_text(join(staging, SUCCESS), "")
    except BaseException:
        fs.delete(staging)
        raise
    commit(fs, staging, url, overwrite)
