"""What the sections share while one document is parsed: where relative paths start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("state")


@dataclass(frozen=True, slots=True)
class ParseContext:
    """`base_dir` is the config file's folder; `state_dir` is already resolved against it."""

    base_dir: Path
    state_dir: Path

    def resolve(self, p: str | Path) -> Path:
        path = Path(p)
        return path if path.is_absolute() else (self.base_dir / path)

    def state_file(self, name: str) -> str:
        """The default location of a state file: inside `state_dir`."""
        return str(self.state_dir / name)
