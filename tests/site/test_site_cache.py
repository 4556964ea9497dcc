"""The site's disk cache (tools/site_cache.py) gives what the wrapped function gives, under keys
that change with the arguments and with the code that draws them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.site import cache as site_cache
from tools.site.source import highlighted

CALLS: list[str] = []


def _shout(text: str, times: int) -> str:
    CALLS.append(text)
    return text.upper() * times


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(site_cache, "CACHE_DIR", tmp_path / "cache")
    CALLS.clear()
    return tmp_path / "cache"


def test_a_second_call_reads_what_the_first_drew(cache_dir: Path) -> None:
    shout = site_cache.kept(_shout)
    assert shout("ab", 2) == "ABAB" and shout("ab", 2) == "ABAB"
    assert CALLS == ["ab"]  # drawn once, read once
    assert len(list(cache_dir.glob("_shout/*.json"))) == 1


def test_other_arguments_are_drawn_again(cache_dir: Path) -> None:
    shout = site_cache.kept(_shout)
    assert (shout("ab", 1), shout("ab", 3), shout("cd", 1)) == ("AB", "ABABAB", "CD")
    assert CALLS == ["ab", "ab", "cd"]


def test_changed_code_is_drawn_again(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shout = site_cache.kept(_shout)
    shout("ab", 1)
    monkeypatch.setattr(site_cache, "_code_stamp", lambda _file: "another version of the module")
    shout("ab", 1)
    assert CALLS == ["ab", "ab"]


def test_a_cache_that_cannot_be_written_still_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setattr(site_cache, "CACHE_DIR", blocked / "cache")
    assert site_cache.kept(_shout)("ab", 1) == "AB"


@settings(max_examples=25)
@given(source=st.text(max_size=200), name=st.sampled_from(["a.py", "b.yaml", "c.md", "d.unknown"]))
def test_highlighting_read_back_is_the_highlighting_drawn(source: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as patch:
        patch.setattr(site_cache, "CACHE_DIR", Path(scratch))
        drawn, read = highlighted(name, source), highlighted(name, source)
    assert drawn == read == highlighted.__wrapped__(name, source)
