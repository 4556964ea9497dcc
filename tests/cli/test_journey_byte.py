"""The life of a byte-level model through every command that makes a model of it.

The walk is tests/support/journey_support.py's, run once for the module, with the byte tokenizer from
the first prepare to the re-imported export, and checked by its `JourneyChecks`.
"""

from __future__ import annotations

import pytest

from stack.data.manifest import load_manifest
from tests.support.journey_support import Journey, JourneyChecks, walk


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    return walk(tmp_path_factory.mktemp("byte"), "byte")


class TestByteJourney(JourneyChecks):
    def test_the_tokenizer_is_bytes(self, journey: Journey) -> None:
        assert load_manifest(journey.dirs["prepare chat"]).tokenizer.name == "byte"
