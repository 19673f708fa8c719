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


def write_lock(descriptors: descriptor_pb2.FileDescriptorSet, path: Path) -> None:
    """Store the contracts as a serialized FileDescriptorSet (source info stripped: only the shape matters)."""
    lock = descriptor_pb2.FileDescriptorSet()
    lock.CopyFrom(descriptors)
    for file in lock.file:
        file.ClearField("source_code_info")
    path.write_bytes(lock.SerializeToString(deterministic=True))


def read_lock(path: Path) -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except Exception as exc:
        raise ContractError(f"{path} is not a lock file written by `eventwire schema lock`: {exc}") from exc


def at_git_revision(source_dir: Path, revision: str) -> descriptor_pb2.FileDescriptorSet:
    """The contracts under ``source_dir`` as they were at a git ``revision`` (a branch, tag or commit)."""
    source_dir = source_dir.resolve()

    def git(*args: str, cwd: Path = source_dir) -> bytes:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
        if done.returncode != 0:
            raise ContractError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    root = Path(git("rev-parse", "--show-toplevel").decode().strip())
    folder = source_dir.relative_to(root).as_posix() or "."
    archive = git("archive", "--format=tar", revision, "--", folder, cwd=root)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(scratch, filter="data")
        snapshot = Path(scratch) / folder
        if not snapshot.is_dir():
            raise ContractError(f"{folder} does not exist at {revision}")
        return descriptor_set(snapshot, with_imports=True)
