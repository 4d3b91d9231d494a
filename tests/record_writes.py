"""Run `distil ...` recording every file this process writes under ROOT (for the torchrun test).

    python record_writes.py ROOT LOG_PREFIX distil-arguments...     → LOG_PREFIX<RANK>.tsv, LOG_PREFIX<RANK>.rows

Python-level writes (open for writing, mkdir, rename, remove, rmtree) are seen by an audit hook;
the native writers that bypass it (`torch.save`, safetensors' `save_file`, the Rust tokenizers behind
`save_pretrained`) are wrapped. Each line: event, path. The .rows file holds every row this process trained on
(Trainer stages and `distil embed`'s loop): one line per row, its token ids without padding. The .seed file holds
the seed of the torch generator (the dropout stream) this process trained with.
"""

import os
import sys

root, log_prefix = os.path.abspath(sys.argv[1]), sys.argv[2]
log = open(f"{log_prefix}{os.environ.get('RANK', '0')}.tsv", "w", encoding="utf-8")  # noqa: SIM115
rows_log = open(f"{log_prefix}{os.environ.get('RANK', '0')}.rows", "w", encoding="utf-8")  # noqa: SIM115
seed_log = open(f"{log_prefix}{os.environ.get('RANK', '0')}.seed", "w", encoding="utf-8")  # noqa: SIM115
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def record(event: str, path) -> None:
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(root + os.sep):
            log.write(f"{event}\t{path}\n")
            log.flush()


def hook(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
        record(event, args[0])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree"):
        record(event, args[0])
    elif event == "os.rename":
        record(event, args[0])
        record(event, args[1])


sys.addaudithook(hook)

import safetensors.torch  # noqa: E402  (before transformers binds save_file)
import torch  # noqa: E402

_save_file, _torch_save = safetensors.torch.save_file, torch.save


def save_file(tensors, filename, *args, **kwargs):
    record("safetensors.save_file", filename)
    return _save_file(tensors, filename, *args, **kwargs)


def torch_save(obj, f, *args, **kwargs):
    record("torch.save", f)
    return _torch_save(obj, f, *args, **kwargs)


safetensors.torch.save_file, torch.save = save_file, torch_save

from transformers.tokenization_utils_base import PreTrainedTokenizerBase  # noqa: E402
from transformers.tokenization_utils_tokenizers import TokenizersBackend  # noqa: E402


def recording(save_pretrained):
    def wrapper(self, save_directory, *args, **kwargs):
        record("tokenizer.save_pretrained", save_directory)
        return save_pretrained(self, save_directory, *args, **kwargs)

    return wrapper


for cls in (PreTrainedTokenizerBase, TokenizersBackend):
    cls.save_pretrained = recording(cls.save_pretrained)



def record_rows(input_ids, attention_mask) -> None:
    seed_log.seek(0)  # the latest seed, padded to one width so no shorter value leaves digits behind
    seed_log.write(f"{torch.initial_seed():>24}\n")
    seed_log.flush()
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        rows_log.write(" ".join(str(i) for i, m in zip(ids, mask) if m) + "\n")
    rows_log.flush()


from transformers import Trainer  # noqa: E402

_training_step = Trainer.training_step


def training_step(self, model, inputs, *args, **kwargs):
    record_rows(inputs["input_ids"], inputs["attention_mask"])
    return _training_step(self, model, inputs, *args, **kwargs)


Trainer.training_step = training_step

import distilkit.train.embedding as embedding  # noqa: E402

_pad_batch = embedding.pad_batch


def pad_batch(ids, pad_id):
    input_ids, mask = _pad_batch(ids, pad_id)
    if sys._getframe(1).f_code.co_name == "train_student":  # a training batch, not the teacher's embeddings
        record_rows(input_ids, mask)
    return input_ids, mask


embedding.pad_batch = pad_batch

from distilkit.cli import app  # noqa: E402

sys.argv = ["distil", *sys.argv[3:]]
app()
