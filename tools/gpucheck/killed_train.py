"""A `changeagent train` process that SIGKILLs itself when step STEP begins (no cleanup, no final
save): the interrupted half of the resume check of tools/gpu_check.py."""

from __future__ import annotations

import os
import signal


def run(kill_at: int, argv: list[str]) -> None:
    """Process target: `changeagent train ARGV`, killed at the start of optimizer step `kill_at`."""
    from changeagent.cli import main as cli
    from changeagent.engine.trainer import Trainer

    step = Trainer._train_step

    def train_step(self, st):  # type: ignore[no-untyped-def]
        if self.step + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, st)

    Trainer._train_step = train_step  # type: ignore[method-assign]
    raise SystemExit(cli(["train", *argv]))
