"""Where the tests find the repository and the small data files they share."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
# Example files in each fine-tuning format (chat, prompt-completion, preference pairs).
DATA = TESTS / "data"
