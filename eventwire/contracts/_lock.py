"""Lock files and git revisions: the baseline ``eventwire schema check`` compares the contracts with."""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from google.protobuf import descriptor_pb2

from .._errors import ContractError
from ._lint import descriptor_set
from ._versions import bundled_files


def write_lock(descriptors: descriptor_pb2.FileDescriptorSet, path: Path) -> None:
    """Store the contracts as a serialized FileDescriptorSet (source info stripped: only the shape matters)."""
    lock = descriptor_pb2.FileDescriptorSet()
    lock.CopyFrom(descriptors)
    for file in lock.file:
        file.ClearField("source_code_info")
    try:
        path.write_bytes(lock.SerializeToString(deterministic=True))
    except OSError as exc:
        raise ContractError(f"cannot write {path}: {exc.strerror}") from exc


def read_lock(path: Path) -> descriptor_pb2.FileDescriptorSet:
    try:
        lock = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except Exception as exc:
        raise ContractError(f"{path} is not a lock file written by `eventwire schema lock`: {exc}") from exc
    if all(file.name in bundled_files() for file in lock.file):
        # An empty file parses as an empty set, and against nothing every change would pass.
        raise ContractError(f"{path} holds no contracts: write it with `eventwire schema lock`")
    return lock


def read_baseline(source_dir: Path, against: str) -> descriptor_pb2.FileDescriptorSet:
    """What ``schema check --against`` names: a lock file, else a git revision of ``source_dir``."""
    if Path(against).is_file():
        return read_lock(Path(against))
    if Path(against).suffix == ".lock":
        raise ContractError(f"no such lock file: {against}")
    return at_git_revision(source_dir, against)


def at_git_revision(source_dir: Path, revision: str) -> descriptor_pb2.FileDescriptorSet:
    """The contracts under ``source_dir`` as they were at a git ``revision`` (a branch, tag or commit)."""
    source_dir = source_dir.resolve()

    def git(*args: str, cwd: Path = source_dir) -> bytes:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
        if done.returncode != 0:
            raise ContractError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    root = Path(git("rev-parse", "--show-toplevel").decode().strip())
    try:
        git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except ContractError:
        raise ContractError(f"{revision!r} is neither a lock file nor a commit of the git repository {root}") from None
    folder = source_dir.relative_to(root).as_posix() or "."
    archive = git("archive", "--format=tar", revision, "--", folder, cwd=root)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(fileobj=BytesIO(archive)) as tar:
        try:
            tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise ContractError(f"cannot unpack {folder} at {revision}: {exc}") from exc
        return descriptor_set(Path(scratch) / folder, with_imports=True)
