"""Committing an output without replacing anything behind the user's back.

A job writes its result into a hidden staging entry beside the target and commits it with
:func:`commit`, which checks the target *again at the moment of the move*:

- without ``overwrite``, the move succeeds only if the target does not exist (an atomic
  no-replace rename); if something appeared meanwhile it is left untouched, the staged result
  is kept under a visible name, and :class:`OutputConflict` says where;
- with ``overwrite``, only an output this project wrote is replaced: a folder carrying the
  :data:`MARKER` file, or a file with the same header line as the new one. Anything else is
  left as it is, and the staged result is kept as above.

Two jobs committing to one target: exactly one wins; the other gets :class:`OutputConflict`.

Local paths use the operating system (``mkdir`` + ``rename`` for folders, ``link`` for files,
both of which fail rather than replace); other filesystems use Hadoop's
``FileContext.rename(..., Options.Rename.NONE)``, atomic on HDFS. No pyspark import here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from typing import Protocol

from .errors import InputError

#: The file that marks a folder as an output of hvd-otto (``--overwrite`` replaces only these).
MARKER = "_HVD_OTTO"


class OutputConflict(InputError):
    """The target was created or changed by someone else while the job ran."""

    def __init__(self, message: str, kept: str):
        super().__init__(message)
        self.kept = kept


class Entries(Protocol):
    """The few filesystem operations a commit needs (local or Hadoop)."""

    def exists(self, url: str) -> bool: ...

    def is_dir(self, url: str) -> bool: ...

    def first_line(self, url: str) -> str: ...

    def move(self, src: str, dst: str) -> bool:
        """Rename ``src`` to the fresh name ``dst``; False when ``src`` does not exist."""

    def move_no_replace(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst`` atomically unless ``dst`` exists (then False)."""

    def delete(self, url: str) -> None: ...


class LocalEntries:
    """:class:`Entries` on a local (or NFS-mounted) filesystem, through the OS."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def first_line(self, path: str) -> str:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\r\n")

    def move(self, src: str, dst: str) -> bool:
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return False
        return True

    def move_no_replace(self, src: str, dst: str) -> bool:
        if not os.path.isdir(src):
            try:  # a hard link fails if dst exists; then the staged name goes
                os.link(src, dst)
            except FileExistsError:
                return False
            os.unlink(src)
            return True
        try:  # mkdir claims the name; rename(2) replaces only that empty folder
            os.mkdir(dst)
        except FileExistsError:
            return False
        try:
            os.rename(src, dst)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False  # someone wrote into the claimed folder: it is theirs now
            os.rmdir(dst)
            raise
        return True

    def delete(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


def marker_text() -> str:
    """What :data:`MARKER` holds: who wrote the output, and when."""
    from .. import __version__

    return json.dumps({"writer": "hvd-otto", "version": __version__,
                       "committed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"


def is_ours(entries: Entries, url: str, staged: str) -> bool:
    """True when ``url`` is an hvd-otto output of the same kind as ``staged``."""
    if entries.is_dir(staged):
        return entries.is_dir(url) and entries.exists(url.rstrip("/") + "/" + MARKER)
    return not entries.is_dir(url) and entries.first_line(url) == entries.first_line(staged)


def describe(entries: Entries, url: str) -> str:
    """A few words on what is at ``url``, for the already-exists message."""
    if not entries.is_dir(url):
        return "a file"
    if entries.exists(url.rstrip("/") + "/" + MARKER):
        return "a complete hvd-otto result"
    if entries.exists(url.rstrip("/") + "/_SUCCESS"):
        return "a complete result not marked as hvd-otto's"
    return "a folder hvd-otto did not complete"


def check_target(entries: Entries, url: str, overwrite: bool, flag: str = "--overwrite",
                 folder: bool = True) -> None:
    """The start-of-job check (:func:`commit` checks again at the end)."""
    if not entries.exists(url):
        return
    what = describe(entries, url)
    if not overwrite:
        raise InputError(f"{url} already exists ({what}); pass {flag} to replace it, or "
                         "choose another path.")
    if folder and what != "a complete hvd-otto result":
        raise InputError(f"{url} exists and is {what} (no {MARKER} marker); {flag} replaces "
                         "only folders hvd-otto wrote. Remove it yourself or choose another "
                         "path.")
    if not folder and entries.is_dir(url):
        raise InputError(f"{url} is a folder; {flag} replaces only a file there. Remove it "
                         "yourself or choose another path.")


def commit(entries: Entries, staged: str, url: str, overwrite: bool,
           flag: str = "--overwrite") -> None:
    """Move the complete ``staged`` folder or file to ``url``, checking ``url`` again now.

    Raises :class:`OutputConflict` (the staged result kept under the name it gives) when
    ``url`` exists and may not be replaced.
    """
    parent, name = url.rstrip("/").rsplit("/", 1)
    token = uuid.uuid4().hex[:8]
    aside = None
    if overwrite and entries.exists(url):
        aside = f"{parent}/.{name}.old-{token}"
        if not entries.move(url, aside):
            aside = None  # it went away meanwhile
        elif not is_ours(entries, aside, staged):
            entries.move_no_replace(aside, url)
            kept = _keep(entries, staged, parent, name, token)
            raise OutputConflict(
                f"{url} was replaced while this job ran by something hvd-otto did not write; "
                f"it was left as it is ({flag} replaces only hvd-otto's own outputs). This "
                f"job's complete result is kept in {kept}.", kept)
    if entries.move_no_replace(staged, url):
        if aside:
            entries.delete(aside)
        return
    kept = _keep(entries, staged, parent, name, token)
    restored = aside is None or entries.move_no_replace(aside, url)
    raise OutputConflict(
        f"{url} appeared while this job ran (another job or a user wrote it); it was left "
        f"untouched. This job's complete result is kept in {kept}: compare the two and move "
        f"the one you want into place, or rerun with {flag}."
        + ("" if restored else f" The output it replaced is in {aside}."), kept)


def _keep(entries: Entries, staged: str, parent: str, name: str, token: str) -> str:
    """Give a staged result that could not be committed a visible name; return it."""
    kept = f"{parent}/{name}.not-committed-{token}"
    return kept if entries.move_no_replace(staged, kept) else staged


def remove_checksums(path: str) -> None:
    """Delete the ``.NAME.crc`` files Hadoop's local filesystem writes beside each file."""
    for folder, _, files in os.walk(path):
        for file in files:
            if file.startswith(".") and file.endswith(".crc") and \
                    os.path.exists(os.path.join(folder, file[1:-4])):
                os.unlink(os.path.join(folder, file))
