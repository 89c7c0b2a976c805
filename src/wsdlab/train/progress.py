"""A rich progress bar for the training loop: step, loss, LR and tokens/s (a no-op when disabled)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Shows steps start..end; `update` after each logged step."""

    def __init__(self, start: int, end: int, enabled: bool, label: str = "train") -> None:
        self._progress: Progress | None = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._task = self._progress.add_task(label, total=end, completed=start, info="")
        self._progress.start()

    def update(self, step: int, loss: float | None, lr: float, tokens_per_s: float | None) -> None:
        if self._progress is None:
            return
        loss_text = "nan" if loss is None else f"{loss:.4f}"
        tps = "" if tokens_per_s is None else f" | {tokens_per_s:,.0f} tok/s"
        self._progress.update(self._task, completed=step, info=f"loss {loss_text} | lr {lr:.2e}{tps}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
