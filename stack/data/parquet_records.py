"""Fine-tuning records from a Parquet file: each row as the object its JSONL line would be.

The datasets people fine-tune on are shipped on the Hugging Face Hub as Parquet (a chat set's
`messages` a list of structs, a preference set's `prompt`, `chosen` and `rejected`), so
`stack prepare --format chat|prompt-completion|prefs` reads them as they are, a row at a time
through pyarrow, instead of asking for a conversion to JSONL first.

A row is its columns by name, nested lists and structs as lists and objects (pyarrow's
`to_pylist`): the record its JSONL line would be, but that Parquet cannot leave a struct's field
out, so a message without a `tool_calls` or a `weight` holds it as null, as a row of the `datasets`
library hands it to transformers' `apply_chat_template`, whose templates read such nulls as no
value; so does the stack (a null `weight` is no weight, stack.data.chat_shapes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.errors import BadInput

PARQUET_MAGIC = b"PAR1"
# Rows read per batch: a chat set's rows are some kilobytes each.
BATCH_ROWS = 256


def is_parquet(path: Path) -> bool:
    """Whether `path` is a Parquet file, by its first bytes."""
    with open(path, "rb") as handle:
        return handle.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


def parquet_records(path: Path, given: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, record) of each row of the Parquet file `path` (`given` names it in a refusal)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                yield row, record
                row += 1
    except (pa.ArrowException, OSError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise BadInput(
            f"{given} cannot be read as Parquet ({detail}); give a Parquet or JSONL file"
        ) from None
