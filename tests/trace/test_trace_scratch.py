"""stack.trace.scratch and the tracer's statistics rows: what a traced forward keeps past a site.

What the scratch must never do is hand out memory twice in one forward (a check would read
another site's rows), or keep a stale copy across forwards (a trace would report the previous
forward's rows); what it is for is that a forward after the first allocates none of its copies.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from stack.trace import scratch as scratch_module
from stack.trace.scratch import Scratch, lent
from stack.trace.tracer import Rows, trace_forward
from tests.support.trace_support import tiny_model

CPU = torch.device("cpu")


def _inside(view: torch.Tensor, buffer: torch.Tensor) -> bool:
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel() * buffer.element_size()
    return start <= view.data_ptr() and view.data_ptr() + view.numel() * view.element_size() <= end


def test_one_forwards_views_never_overlap_and_the_next_forward_fits_in_the_buffer() -> None:
    scratch = Scratch()
    first = [scratch.take((3, 5), torch.float32, CPU) for _ in range(4)]
    assert scratch.buffers == {} and len({view.data_ptr() for view in first}) == 4  # tensors of their own
    scratch.reset()
    buffer = scratch.buffers[(CPU, torch.float32)]
    assert buffer.numel() == 4 * 15  # as large as the forward wanted
    views = [scratch.take((3, 5), torch.float32, CPU) for _ in range(4)]
    assert all(_inside(view, buffer) for view in views)
    starts = sorted(view.data_ptr() for view in views)
    assert all(b - a >= 15 * 4 for a, b in itertools.pairwise(starts))  # no two overlap
    for i, view in enumerate(views):
        view.fill_(i)
    assert [int(view[0, 0]) for view in views] == [0, 1, 2, 3]
    beyond = scratch.take((2,), torch.float32, CPU)  # more than the buffer holds: a tensor of its own
    assert not _inside(beyond, buffer)


def test_a_forward_of_the_same_shapes_gets_the_same_views_until_the_buffer_is_replaced() -> None:
    scratch = Scratch()
    scratch.take((4, 3), torch.float32, CPU)
    scratch.reset()
    first = scratch.take((4, 3), torch.float32, CPU)
    scratch.reset()
    assert scratch.take((4, 3), torch.float32, CPU) is first  # the next forward's, kept
    scratch.take((8,), torch.float32, CPU)  # beyond the buffer: it is replaced at the reset
    scratch.reset()
    again = scratch.take((4, 3), torch.float32, CPU)
    assert again is not first and _inside(again, scratch.buffers[(CPU, torch.float32)])


def test_rows_and_copies_hold_what_they_copied() -> None:
    scratch = Scratch()
    scratch.take((64,), torch.float32, CPU)
    scratch.reset()
    source = torch.arange(40, dtype=torch.float32).reshape(8, 5)
    rows = scratch.rows(source, torch.tensor([1, 6]))
    copied = scratch.copy(source[:, 1:3])
    assert torch.equal(rows, source[[1, 6]])
    assert torch.equal(copied, source[:, 1:3]) and copied.is_contiguous()


def test_repeated_traces_reuse_the_scratch_and_report_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    idx = torch.randint(model.config.vocab, (2, 24), generator=torch.Generator().manual_seed(3))
    scratch_module._IDLE.clear()
    first, _ = trace_forward(model, idx)
    with lent() as kept:  # the scratch the first trace returned, now with its buffers
        assert kept.buffers
    taken: list[bool] = []
    real = Scratch.take

    def watched(
        self: Scratch, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        view = real(self, shape, dtype, device)
        buffer = self.buffers.get((device, dtype))
        taken.append(buffer is not None and _inside(view, buffer))
        return view

    monkeypatch.setattr(Scratch, "take", watched)
    second, _ = trace_forward(model, idx)
    assert taken and all(taken)  # every copy of the second forward came from the first one's buffers
    assert second.identities == first.identities
    assert second.recomputed == first.recomputed and second.sampled == first.sampled


def test_statistics_rows_past_their_capacity_keep_the_rows_written() -> None:
    """More sites than the model was expected to show: every row handed out stays where it was
    handed out (a CUDA site's is written after the forward, by its queued merge), all in `used`."""
    rows = Rows(2, CPU)
    taken = [rows.take() for _ in range(5)]
    for i, row in enumerate(taken):  # written only after every row was handed out
        row.fill_(i)
    assert rows.used()[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
