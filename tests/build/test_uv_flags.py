"""The Makefile's uv install reads the package sources pip is configured with (tools/uv_flags.py):
a mirror, a wheel folder or a constraints file pip would use is not silently dropped."""

from __future__ import annotations

from tools.uv_flags import pip_settings, uv_flags

LISTING = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/wheels'
user.find-links='/home/me/wheels'
:env:.index-url='https://mirror.example/simple'
"""


def test_every_source_pip_reads_becomes_a_uv_flag() -> None:
    flags = uv_flags(pip_settings(LISTING))
    pairs = list(zip(flags[::2], flags[1::2], strict=False))
    assert ("--extra-index-url", "file:///opt/a/simple") in pairs
    assert ("--extra-index-url", "file:///opt/b/simple") in pairs
    assert ("--constraint", "/etc/xdg/pip/constraints.txt") in pairs
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert "--native-tls" in flags


def test_a_stronger_scope_replaces_a_weaker_one() -> None:
    """pip's precedence: a user file over the global one, PIP_* variables over both."""
    settings = pip_settings(LISTING)
    assert settings["find-links"] == "/home/me/wheels"
    assert pip_settings(":env:.find-links='/env'\nglobal.find-links='/g'")["find-links"] == "/env"


def test_no_configuration_gives_pip_default_behaviour() -> None:
    assert uv_flags(pip_settings("")) == ["--index-strategy", "unsafe-best-match"]
