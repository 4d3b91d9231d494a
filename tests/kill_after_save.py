"""Run `distil ...` and SIGKILL this very process right after it has written checkpoint STEP (for the resume tests).

    python kill_after_save.py STEP distil-arguments...

Every `transformers.Trainer` gets a callback that kills the process on the save of step STEP (after the Trainer
has written the whole checkpoint, trainer_state.json last), and `distil embed`'s own loop is killed right after
its `save_checkpoint` of step STEP returns: a kill at a known point, with no race against a watching test.
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

import distilkit.train.embedding as embedding  # noqa: E402

_save_checkpoint = embedding.save_checkpoint


def save_checkpoint(folder, step, *args, **kwargs):
    written = _save_checkpoint(folder, step, *args, **kwargs)
    if step == kill_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return written


embedding.save_checkpoint = save_checkpoint

from distilkit.cli import app  # noqa: E402

sys.argv = ["distil", *sys.argv[2:]]
app()
