"""Evaluation: held-out scores that count every byte of the text they claim to score."""
