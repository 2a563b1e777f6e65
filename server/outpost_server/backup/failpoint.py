"""Named crash points for crash-consistency tests.

A test sets OUTPOST_FAILPOINT to a point's name; the process that reaches that
point kills itself with SIGKILL, exactly as a power cut or the OOM killer
would. Unset (always, in production), a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "OUTPOST_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
