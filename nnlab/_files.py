"""Files of arrays: atomic ``.npz`` writes that leave nothing behind, and reads that check every
member's declared size against what the file really holds before allocating anything.

A save writes ``.<name>.nnlab-tmp-<pid>-<n>`` in the target's directory, flushes it to disk
(fsync) and renames it over the target (``os.replace``, atomic on POSIX and Windows): a reader
sees the old file or the new one, never a mix. A process killed mid-save leaves its temporary
file; the next save or load of the same path deletes the temporary files of that path whose
process is gone.
"""

import itertools
import json
import os
import re
import zipfile

import numpy as np

from .errors import ModelFileError

TMP_TAG = ".nnlab-tmp-"
_counter = itertools.count()
JSON_LIMIT = 64 << 20  # bytes of a JSON header member: far above any real configuration


def _tmp_pattern(path):
    base = os.path.basename(path)
    return re.compile(r"^\." + re.escape(base) + re.escape(TMP_TAG) + r"(\d+)-\d+$")


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or a platform without signals
        return True
    return True


def clean_stale(path):
    """Delete the temporary files a killed save of ``path`` left (only those whose process is gone).
    Returns the names deleted."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = _tmp_pattern(path)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _file_mode(path):
    """Permissions for a saved file: those of the file it replaces, else 0666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def json_member(obj):
    """A JSON document as a uint8 array (an ``.npz`` member that needs no pickle)."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def check_target(path, what=""):
    """``path`` as a string, after checking it can name a file to save (its folder exists and it is
    not a folder itself); ``what`` (e.g. ``"checkpoint "``) goes into the message."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ModelFileError(f"cannot save {what}{path}: no such directory {directory}")
    if os.path.isdir(path):
        raise ModelFileError(f"cannot save {what}{path}: it is a directory")
    return path


def write_npz(path, members):
    """Write ``members`` ({name: array}) to ``path`` as an uncompressed ``.npz``, atomically."""
    path = check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    clean_stale(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}{TMP_TAG}{os.getpid()}-{next(_counter)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:  # a folder that refuses files: name the target, not the temporary file
        raise ModelFileError(f"cannot save {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **members)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # a full disk, a quota: the old file is intact
            raise ModelFileError(f"cannot save {path}: {exc.strerror or exc}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class NpzReader:
    """An ``.npz`` opened for checked reading: :meth:`header` gives a member's (shape, dtype) from
    its ``.npy`` header alone, :meth:`array` reads it after checking that the declared size is
    present in the file, :meth:`json` reads a JSON member. Every problem is a ModelFileError that
    names the file and the member. No member is ever unpickled."""

    def __init__(self, path, kind="nnlab model file"):
        self.path = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else path
        self.kind = kind
        if not isinstance(self.path, (str, bytes)) and not hasattr(self.path, "read"):
            raise ModelFileError(f"an {kind} is read from a path or a binary file object; got {type(path).__name__}")
        try:
            self.size = os.stat(self.path).st_size if isinstance(self.path, (str, bytes)) else None
            self.zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            noun = "checkpoint" if "checkpoint" in kind else "model file"
            raise ModelFileError(f"no such {noun}: {path}") from None
        except IsADirectoryError:
            raise ModelFileError(f"{path} is not an {kind} (it is a directory)") from None
        except Exception as exc:  # OSError, BadZipFile, an empty file, a plain .npy, ...
            if isinstance(self.path, (str, bytes)) and _is_npy(self.path):
                raise ModelFileError(f"{path} is not an {kind} (a single .npy array, not an .npz archive)") from None
            if isinstance(exc, zipfile.BadZipFile):
                raise ModelFileError(f"{path} is not an {kind} (not an .npz archive; nnlab saves them with "
                                     f"Sequential.save, nnlab.save_checkpoint or 'nnlab train --save')") from None
            raise ModelFileError(f"{path} is not an {kind} ({type(exc).__name__}: {exc})") from None
        try:
            self.members = {info.filename[:-4]: info for info in self.zip.infolist() if info.filename.endswith(".npy")}
        except Exception as exc:
            self.close()
            raise ModelFileError(f"{path} is not an {kind} ({type(exc).__name__}: {exc})") from None

    def close(self):
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fail(self, message):
        raise ModelFileError(f"{self.path}: {message}")

    @property
    def files(self):
        return list(self.members)

    def __contains__(self, name):
        return name in self.members

    def header(self, name):
        """(shape, dtype, header bytes) of member ``name`` read from its .npy header only."""
        info = self.members.get(name)
        if info is None:
            raise ModelFileError(f"{self.path} is not an {self.kind} (no '{name}' member)")
        try:
            with self.zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                offset = fh.tell()
        except Exception as exc:
            raise ModelFileError(f"{self.path}: member '{name}' is not a readable array "
                                 f"({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise ModelFileError(f"{self.path}: member '{name}' holds Python objects (pickled data is never loaded)")
        return shape, dtype, offset

    def array(self, name, dtype_kind="f", shape=None, finite=False, label=None):
        """Member ``name`` as an array, its header checked first: the dtype kind, the ``shape``
        when given, and that the file holds all the bytes the header declares (a member whose
        header claims more than the archive stores is refused before anything is allocated)."""
        label = label or f"member '{name}'"
        got_shape, dtype, offset = self.header(name)
        if dtype.kind not in dtype_kind:
            self.fail(f"{label} has dtype {dtype}, expected {'a float' if dtype_kind == 'f' else dtype_kind} type")
        if shape is not None and tuple(got_shape) != tuple(shape):
            self.fail(f"{label} has shape {tuple(got_shape)}, expected {tuple(shape)}")
        info = self.members[name]
        nbytes = int(np.prod(got_shape, dtype=np.float64)) * dtype.itemsize
        if info.file_size != offset + nbytes or (info.compress_type == zipfile.ZIP_STORED
                                                  and info.compress_size != info.file_size):
            self.fail(f"{label} declares {nbytes} bytes of data but the archive holds "
                      f"{max(info.file_size - offset, 0)} (truncated or corrupt)")
        if (self.size is not None and info.compress_type == zipfile.ZIP_STORED
                and info.header_offset + info.compress_size > self.size):
            self.fail(f"{label} runs past the end of the file (truncated)")
        try:
            with self.zip.open(info) as fh:
                arr = np.lib.format.read_array(fh, allow_pickle=False)
        except Exception as exc:
            raise ModelFileError(f"{self.path}: cannot read {label} ({type(exc).__name__}: {exc})") from None
        if finite and arr.size and not np.isfinite(arr).all():
            bad = arr.reshape(-1)[~np.isfinite(arr.reshape(-1))][0]
            self.fail(f"{label} contains non-finite values ({bad}); refusing to load them")
        return arr

    def json(self, name):
        """The JSON document in uint8 member ``name``."""
        shape, dtype, _ = self.header(name)
        if dtype != np.uint8 or len(shape) != 1:
            self.fail(f"member '{name}' is not a JSON text (dtype {dtype}, shape {shape})")
        if shape[0] > JSON_LIMIT:
            self.fail(f"member '{name}' declares {shape[0]} bytes of JSON, more than the {JSON_LIMIT} allowed")
        raw = self.array(name, dtype_kind="u")
        try:
            return json.loads(raw.tobytes().decode("utf-8"))
        except Exception as exc:
            raise ModelFileError(f"{self.path}: member '{name}' is not valid JSON "
                                 f"({type(exc).__name__}: {exc})") from None


def _is_npy(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"
    except OSError:
        return False
