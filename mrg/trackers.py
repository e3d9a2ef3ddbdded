"""Trackers for step metrics besides the terminal: a CSV file in long format (TensorBoard is accelerate's own)."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker


class CSVTracker(GeneralTracker):
    """An accelerate tracker that appends step metrics to a CSV file in long format.

    Columns ``step,name,value,time`` (time in seconds since the epoch). Long format keeps the file
    appendable when new metrics appear; ``pandas.read_csv(path).pivot_table(index="step",
    columns="name", values="value")`` gives one column per metric. On resume, rows logged after the
    resumed step (by the interrupted run) are dropped, so the file matches an uninterrupted run's.
    """

    name = "csv"
    requires_logging_directory = False
    main_process_only = True
    FIELDS = ("step", "name", "value", "time")

    def __init__(self, path: Path, *, keep_until_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.keep_until_step = keep_until_step
        self._handle: Any = None
        self._writer: Any = None

    @property
    def tracker(self) -> Any:
        return self._writer

    def start(self) -> None:
        kept: list[dict[str, str]] = []
        if self.keep_until_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                kept = [row for row in csv.DictReader(handle) if _int_or(row.get("step"), 1 << 62) <= self.keep_until_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)
        self._handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        self._writer = csv.writer(self._handle)

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """The configuration is in ``RUN_DIR/config.yaml``; the CSV holds numbers only."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        now = f"{time.time():.3f}"
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.writerow([step if step is not None else "", name, repr(float(value)), now])
        self._handle.flush()

    def finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
