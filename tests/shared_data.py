"""Where the read-only real samples live: `shared/` beside the repository (CI clones main with a copy
of shared/ next to it), or /work/shared on a developer machine."""

from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
SHARED = next((p for p in (_REPO.parent / "shared", Path("/work/shared")) if p.is_dir()), _REPO.parent / "shared")
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"
