"""Run `distil ...` and SIGKILL this very process right after it has written checkpoint STEP (for the resume tests).

    python kill_after_save.py STEP distil-arguments...

Every `transformers.Trainer` gets a callback that kills the process on the save of step STEP (after the Trainer
has written the whole checkpoint, trainer_state.json last): a kill at a known point, with no race against a
watching test. Any other training loop of distilkit that checkpoints calls `distilkit.train.common.on_checkpoint`
hooks, if it has any (see below).
"""

import os
import signal
import sys

kill_step = int(sys.argv[1])

from transformers import Trainer, TrainerCallback  # noqa: E402


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)


_init = Trainer.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.add_callback(KillAfterSave())


Trainer.__init__ = init

from distilkit.cli import app  # noqa: E402

sys.argv = ["distil", *sys.argv[2:]]
app()
