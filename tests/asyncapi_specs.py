"""The official AsyncAPI 3.0.0 JSON Schema, for validating what ``eventwire asyncapi`` writes.

No PyPI package ships it; the AsyncAPI initiative publishes it in the npm package
``@asyncapi/specs``. ``python -m tests.asyncapi_specs`` (run by scripts/test before
pytest) fetches the pinned version with ``npm pack`` into ``.cache/`` (ignored by
git), checks its digest and keeps the one schema file; the tests read it from there.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

SPECS_VERSION = "6.11.1"
SCHEMA_MEMBER = "package/schemas/3.0.0.json"
SCHEMA_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
SCHEMA_FILE = Path(__file__).parent.parent / ".cache" / "asyncapi-specs" / SPECS_VERSION / "3.0.0.json"
FETCH_COMMAND = ".venv/bin/python -m tests.asyncapi_specs"


def fetch() -> Path:
    """Fetch the schema into the cache unless it is there already; return its path."""
    if SCHEMA_FILE.exists():
        return SCHEMA_FILE
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["npm", "pack", f"@asyncapi/specs@{SPECS_VERSION}", "--pack-destination", scratch, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = Path(scratch).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(SCHEMA_MEMBER)
            if member is None:
                raise RuntimeError(f"{tarball.name} holds no {SCHEMA_MEMBER}")
            data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCHEMA_SHA256:
        raise RuntimeError(f"@asyncapi/specs@{SPECS_VERSION} {SCHEMA_MEMBER} has sha256 {digest}, not {SCHEMA_SHA256}")
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    partial = SCHEMA_FILE.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(SCHEMA_FILE)
    return SCHEMA_FILE


if __name__ == "__main__":
    print(f"AsyncAPI 3.0.0 JSON Schema: {fetch()}")
