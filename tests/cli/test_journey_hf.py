"""The life of a Hugging Face Llama-family model brought with its own tokenizer.

The model is built offline (tests/support/hf_fixtures.py: a Llama-3-style byte-level BPE with its special
tokens, weights written by transformers), imported, and then walked through every command that
makes a model of it (tests/support/journey_support.py), its own tokenizer all the way: the lineage starts
at the import, whose parent is a model made elsewhere, named by its weights alone.
"""

from __future__ import annotations

import pytest

from stack.data.manifest import load_manifest
from tests.support.hf_fixtures import llama_model
from tests.support.journey_support import SOURCE, Journey, JourneyChecks, records, walk


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    root = tmp_path_factory.mktemp("hf")
    source = llama_model(root / "llama", max_position_embeddings=128)
    return walk(root, "hf", source=source)


class TestHuggingFaceJourney(JourneyChecks):
    def test_the_tokenizer_is_the_model_s_own_and_its_parent_was_made_elsewhere(
        self, journey: Journey
    ) -> None:
        assert load_manifest(journey.dirs["prepare"]).tokenizer.name == "hf"
        lineage = records(journey)[SOURCE].lineage
        assert lineage is not None
        (first,) = lineage.parents
        assert first.run is None and first.role == "source"  # made elsewhere: its weights name it
