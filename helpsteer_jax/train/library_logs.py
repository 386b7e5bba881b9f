"""The trainer's log lines kept to its own: Orbax's per-array INFO lines dropped, its warnings and
errors cut to their first line."""

from __future__ import annotations

import logging


class DropLibraryInfo(logging.Filter):
  """Keeps the run's own INFO lines; Orbax logs several INFO lines per array per save. Orbax's
  warnings and errors are kept to their first line: a failed background save is logged by it
  three times with a traceback (and a TensorStore spec per array), and the run raises it itself
  as one line naming the step's folder and the OS error."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    try:
      message = record.getMessage()
    except Exception:  # a malformed record is the handler's to report, as it is
      return True
    if record.exc_info or "\n" in message:
      lines = message.strip().splitlines()
      record.msg, record.args = (lines[0] if lines else ""), ()
      record.exc_info, record.exc_text = None, None
    return True


def quiet_library_logs() -> None:
  for handler in logging.getLogger().handlers:
    handler.addFilter(DropLibraryInfo())
