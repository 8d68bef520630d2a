"""One logger for the project, with tqdm progress bars routed through it.

    from isegm.utils.log import logger, setup_logging, progress
    setup_logging(log_file=exp_dir / "train_log.txt")
    for batch in progress(loader, desc="epoch 3"):
        ...
"""
from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import Iterable, Optional, TypeVar

from tqdm import tqdm

LOGGER_NAME = "iglr"
logger = logging.getLogger(LOGGER_NAME)
_FORMAT = "%(asctime)s (%(levelname)s) %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"

T = TypeVar("T")


def setup_logging(log_file: Optional[Path] = None, level: int = logging.INFO,
                  enabled: bool = True) -> logging.Logger:
    """Configure the project logger: a console handler and, optionally, a file handler.

    `enabled=False` (non-zero distributed ranks) silences everything below WARNING.
    Calling it again replaces the handlers, so it is safe in tests.
    """
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level if enabled else logging.WARNING)
    logger.propagate = False
    formatter = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if log_file is not None and enabled:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


class TqdmToLogger(io.StringIO):
    """File-like object that forwards tqdm's refreshed line to the logger."""

    def __init__(self, log: logging.Logger = logger, level: int = logging.INFO, mininterval: float = 5.0):
        super().__init__()
        self.log = log
        self.level = level
        self.mininterval = mininterval
        self._buf = ""

    def write(self, buf: str) -> int:
        self._buf = buf.strip("\r\n\t ")
        return len(buf)

    def flush(self) -> None:
        if self._buf:
            self.log.log(self.level, self._buf)
            self._buf = ""


def progress(iterable: Iterable[T], desc: str = "", total: Optional[int] = None,
             disable: bool = False, mininterval: float = 5.0, **kwargs) -> Iterable[T]:
    """A tqdm bar whose refreshes go to the project logger (and so to the log file)."""
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=TqdmToLogger(),
                mininterval=mininterval, ncols=100, **kwargs)
