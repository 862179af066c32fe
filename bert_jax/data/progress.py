"""Progress bars for the long commands: count, rate and ETA on a terminal, nothing in logs.

    from bert_jax.data import progress

    for doc in progress.bar(documents, desc="documents", unit="doc"):
        ...
    with progress.bar(total=num_steps, initial=step, desc="train", unit="step") as bar:
        for ...:
            bar.update()
    progress.write(f"step {step} loss {loss:.4f}")  # print(..., flush=True), above the bars

`bar` returns a `tqdm.tqdm` writing to stderr. It draws only where stderr is
a terminal (tqdm's `disable=None`) and, in a multi-host JAX run
(`jax.distributed` initialized), only on process 0. Anywhere else it is a
disabled tqdm: iterating passes the items through, `update` and
`set_postfix` do nothing, and nothing is written, so a log redirected to a
file never fills with bar frames. A bar first draws after `DELAY_S`; a
nested bar (one opened while another is open) takes the line below and
disappears when closed.

While a bar draws, absl's log lines and `write` lines go above the bars
instead of through them (tqdm's `external_write_mode`).
"""

from __future__ import annotations

import sys

import tqdm
from absl import logging

# Seconds before a bar first draws: a quick pass (a short eval, a few inputs
# to predict) leaves no trace.
DELAY_S = 1.0


def bar(
    iterable=None, *, total: float | None = None, desc: str | None = None, unit: str = "it", **kw
) -> tqdm.tqdm:
    """A tqdm progress bar on stderr, drawn only on a terminal and JAX process 0.

    Args:
      iterable: what to wrap; its `len()` is the total unless `total` is given.
      total: the expected count (the ETA needs it); None for a stream.
      desc: the bar's label.
      unit: what one count is ("doc", "step", "batch").
      **kw: more `tqdm.tqdm` arguments (e.g. `initial`, `unit_scale`).
    """
    kw = {"delay": DELAY_S, "leave": None, "dynamic_ncols": True} | kw
    disable = None if _first_process() else True
    return _Bar(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, **kw)


def write(line: str) -> None:
    """`print(line, flush=True)` that clears any bar first and redraws it after."""
    tqdm.tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _first_process() -> bool:
    # jax is looked up, not imported: the data commands do not need it (and
    # its start-up time), and a process that never imported it is not a
    # multi-host JAX run. `is_initialized` first, so no backend is started.
    jax = sys.modules.get("jax")
    return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


class _AboveBars:
    """A stream whose writes clear the bars, go out, then redraw the bars."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        with tqdm.tqdm.external_write_mode(file=self.stream):
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class _Bar(tqdm.tqdm):
    """A tqdm that, while it draws, sends absl's stderr log lines above the bars.

    absl's handler is not a `logging.StreamHandler`, so tqdm's
    `logging_redirect_tqdm` would add a second handler beside it (every line
    twice) instead of replacing it; here absl's own handler keeps its format
    and rules, and only its stream (sys.stderr) is wrapped until `close`.
    (With --logtostderr, absl writes to sys.stderr itself, past the wrapper:
    a log line may then share a line with a bar.)
    """

    def __init__(self, *args, **kwargs):
        self._absl_handler = None
        super().__init__(*args, **kwargs)
        handler = logging.get_absl_handler().python_handler
        if not self.disable and handler.stream is sys.stderr:
            handler.stream = _AboveBars(handler.stream)
            self._absl_handler = handler

    def close(self) -> None:
        handler, self._absl_handler = getattr(self, "_absl_handler", None), None
        if handler is not None and isinstance(handler.stream, _AboveBars):
            handler.stream = handler.stream.stream
        super().close()
