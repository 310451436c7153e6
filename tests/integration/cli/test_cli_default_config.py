"""Run outside the checkout, the CLI falls back to the repository's config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.cli.main import _find_config

REPO = Path(__file__).resolve().parents[3]


def test_without_a_path_the_repository_config_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _find_config(None) == REPO / "config.toml"
    assert _find_config(None).exists()
