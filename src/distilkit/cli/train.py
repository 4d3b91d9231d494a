"""Training commands: student, finetune, task, embed, pretrain, corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from .common import (DataOpt, DevFileOpt, DevLimitOpt, LabelColOpt, LabelSepOpt, LayersOpt, LoggingStepsOpt,
                     PositiveLabelOpt, MultiLabelOpt, NumLayersOpt, OverwriteOpt, PairColOpt, RegressionOpt,
                     ResumeOpt, SaveStepsOpt,
                     TaskOpt, TeacherOpt, TextColOpt, TrainFileOpt, TrainLimitOpt, cache_root, command, console,
                     print_metrics, print_params, teacher_path, TrimVocabOpt, VocabCorpusOpt, VocabSizeOpt, vocab_trim,
                     HeadsOpt, HiddenSizeOpt, ScoreRowsOpt, IntermediateSizeOpt, student_width)


@command()
def student(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    layers: Optional[str] = LayersOpt,
    num_layers: Optional[int] = NumLayersOpt,
    trim_vocab: bool = TrimVocabOpt, vocab_size: Optional[int] = VocabSizeOpt,
    vocab_corpus: Optional[Path] = VocabCorpusOpt,
    hidden_size: Optional[int] = HiddenSizeOpt, intermediate_size: Optional[int] = IntermediateSizeOpt,
    heads: Optional[int] = HeadsOpt,
    overwrite: bool = OverwriteOpt,
):
    """Build a student from a teacher: fewer layers copied from chosen teacher layers."""
    from ..stages.task import make_student

    trim = vocab_trim(trim_vocab, vocab_size, vocab_corpus)
    if trim is not None and trim.corpus is None:
        raise ConfigError("distil student --trim-vocab keeps the tokens of --vocab-corpus FILE: give it")
    info = make_student(teacher_path(teacher), out, layers=layers, num_layers=num_layers, overwrite=overwrite,
                        trim=trim, width=student_width(hidden_size, intermediate_size, heads))
    console.print(f"student ({info['student_type']}) from teacher layers {info['layer_map']} → {out}")
    print_params(info["parameters"])


@command()
def finetune(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt, train_limit: Optional[int] = TrainLimitOpt,
    dev_limit: Optional[int] = DevLimitOpt, multi_label: bool = MultiLabelOpt, label_separator: str = LabelSepOpt,
    positive_label: Optional[str] = PositiveLabelOpt,
    epochs: float = 2.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: when supported)."),
    force: bool = typer.Option(False, "--force", help="Fine-tune even when the teacher already has a task head."),
    save_steps: int = SaveStepsOpt, logging_steps: int = LoggingStepsOpt,
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """Fine-tune the teacher on a task (skipped when it already has a fitting head)."""
    from ..data.task import load_task_data
    from ..stages.task import finetune_teacher
    from ..train.common import TrainConfig

    d = load_task_data(task=task, data_dir=data, train_file=train, dev_file=dev, text_column=text_column,
                       text_pair_column=text_pair_column, label_column=label_column, regression=regression,
                       train_limit=train_limit, dev_limit=dev_limit, multi_label=multi_label,
                       label_separator=label_separator, positive_label=positive_label)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed, bf16=bf16,
                      save_steps=save_steps, logging_steps=logging_steps)
    info = finetune_teacher(teacher_path(teacher), d, cfg, out, overwrite=overwrite, resume=resume, force=force)
    print_metrics(f"{d.name} dev", {"teacher": info["metrics"]})


@command("task")
def task_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher fine-tuned on the task (distil finetune)."),
    out: Path = typer.Option(..., "--out", "-o"),
    student_dir: Optional[str] = typer.Option(None, "--student", help="Student to start from (default: built from the teacher)."),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt, train_limit: Optional[int] = TrainLimitOpt,
    dev_limit: Optional[int] = DevLimitOpt, multi_label: bool = MultiLabelOpt, label_separator: str = LabelSepOpt,
    positive_label: Optional[str] = PositiveLabelOpt,
    alpha: float = typer.Option(0.5, help="Weight of the soft-target loss (1-alpha on the gold labels)."),
    temperature: float = typer.Option(2.0, help="Softmax temperature of the soft targets."),
    cls_weight: float = typer.Option(0.0, help="Weight of the cosine loss between final [CLS] states."),
    augment: int = typer.Option(0, help="Perturbed copies of each training row, labelled by the teacher only "
                                "(a larger transfer set; 0: off)."),
    hidden_weight: float = typer.Option(0.0, help="Weight of the intermediate-layer loss: MSE between student and "
                                        "teacher hidden states, every layer and token (runs the teacher online; 0: off)."),
    augment_neighbours: int = typer.Option(0, help="With --augment: a replaced word becomes one of its K nearest "
                                           "neighbours in the teacher's input embeddings (0: a random training word)."),
    attention_weight: float = typer.Option(0.0, help="Weight of the attention loss: KL between teacher and student "
                                           "attention distributions, each student layer against the teacher's at the "
                                           "matching depth (runs the teacher online; 0: off)."),
    unlabeled: Optional[str] = typer.Option(None, help="Extra inputs only the teacher labels: 'test' (a GLUE task's "
                                            "test splits) or a CSV/TSV/JSONL file with the training text column(s)."),
    mined_pairs: int = typer.Option(0, help="Pair tasks: N new pairs per training row, a text with one of its 10 most "
                                    "similar training sentences (TF-IDF), labelled by the teacher only (0: off)."),
    trim_vocab: bool = TrimVocabOpt, vocab_size: Optional[int] = VocabSizeOpt,
    vocab_corpus: Optional[Path] = VocabCorpusOpt,
    hidden_size: Optional[int] = HiddenSizeOpt, intermediate_size: Optional[int] = IntermediateSizeOpt,
    heads: Optional[int] = HeadsOpt, score_rows: int = ScoreRowsOpt,
    epochs: float = 3.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    cache_dir: Optional[Path] = typer.Option(None, help="Where teacher outputs are cached (default ~/.cache/distilkit)."),
    save_steps: int = SaveStepsOpt, logging_steps: int = LoggingStepsOpt,
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """Task distillation: soft targets of the fine-tuned teacher (cached) + gold labels."""
    from ..data.task import load_task_data
    from ..stages.task import distil_task
    from ..train.common import TrainConfig
    from ..train.task import DistillConfig

    dcfg = DistillConfig(alpha=alpha, temperature=temperature, cls_weight=cls_weight, augment=augment,
                         hidden_weight=hidden_weight, augment_neighbours=augment_neighbours,
                         attention_weight=attention_weight, mined_pairs=mined_pairs)
    d = load_task_data(task=task, data_dir=data, train_file=train, dev_file=dev, text_column=text_column,
                       text_pair_column=text_pair_column, label_column=label_column, regression=regression,
                       train_limit=train_limit, dev_limit=dev_limit, unlabeled=unlabeled, multi_label=multi_label,
                       label_separator=label_separator, positive_label=positive_label)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed, bf16=bf16,
                      save_steps=save_steps, logging_steps=logging_steps)
    info = distil_task(teacher_path(teacher), d, cfg, dcfg, out, cache_dir or cache_root(), student=student_dir,
                       layers=layers, num_layers=num_layers, overwrite=overwrite, resume=resume,
                       trim=vocab_trim(trim_vocab, vocab_size, vocab_corpus),
                       width=student_width(hidden_size, intermediate_size, heads, score_rows))
    print_metrics(f"{d.name} dev", {"student": info["metrics"]})


@command()
def embed(
    teacher: Optional[str] = TeacherOpt,
    corpus: list[str] = typer.Option(..., "--corpus", help="Unlabelled sentences: a text file (one per line), a folder "
                                                          "of them, or a glue_data folder (train sentences only). Repeatable."),
    out: Path = typer.Option(..., "--out", "-o"),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    epochs: float = typer.Option(3.0, help="Passes over the corpus (0: write the untrained truncated student)."),
    batch_size: int = 64, lr: float = 1e-4, max_length: int = 128, seed: int = 42,
    warmup: float = typer.Option(0.06, help="Share of the steps with a rising learning rate."),
    mse_weight: float = typer.Option(1.0, help="Weight of the MSE between pooled embeddings."),
    cos_weight: float = typer.Option(1.0, help="Weight of 1 - cos(student, teacher)."),
    sim_weight: float = typer.Option(1.0, help="Weight of the MSE between in-batch cosine-similarity matrices."),
    trim_vocab: bool = TrimVocabOpt, vocab_size: Optional[int] = VocabSizeOpt,
    vocab_corpus: Optional[Path] = VocabCorpusOpt,
    hidden_size: Optional[int] = HiddenSizeOpt, intermediate_size: Optional[int] = IntermediateSizeOpt,
    heads: Optional[int] = HeadsOpt,
    cache_dir: Optional[Path] = typer.Option(None, help="Where teacher embeddings are cached (default ~/.cache/distilkit/embed)."),
    save_steps: int = SaveStepsOpt,
    logging_steps: int = typer.Option(100, "--logging-steps", help="Log the loss every N steps."),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """Distil a sentence-embedding teacher into a smaller student on unlabelled sentences (no labels used)."""
    from ..stages.embedding import distil_embeddings
    from ..train.embedding import EmbedConfig

    cfg = EmbedConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed,
                      warmup=warmup, mse_weight=mse_weight, cos_weight=cos_weight, sim_weight=sim_weight,
                      logging_steps=logging_steps)
    info = distil_embeddings(teacher_path(teacher), corpus, out, cfg, layers=layers, num_layers=num_layers,
                             cache_dir=cache_dir or cache_root() / "embed", overwrite=overwrite,
                             say=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
                             save_steps=save_steps, resume=resume,
                             trim=vocab_trim(trim_vocab, vocab_size, vocab_corpus),
                             width=student_width(hidden_size, intermediate_size, heads))
    trained = f"{info['train']['steps']} steps in {info['train']['seconds']:.0f} s" if info["train"] else "untrained"
    console.print(f"embedding student ({info['student_type']}, teacher layers {info['layer_map']}, {trained}) → {out}")


@command()
def pretrain(
    teacher: Optional[str] = TeacherOpt,
    corpus: str = typer.Option(..., "--corpus", help="Text file, folder of text files, hub dataset name[:config], "
                                                     "or a folder prepared by `distil corpus`."),
    out: Path = typer.Option(..., "--out", "-o"),
    student_dir: Optional[str] = typer.Option(None, "--student", help="Student to start from (default: built from the teacher)."),
    layers: Optional[str] = LayersOpt,
    eval_corpus: Optional[str] = typer.Option(None, "--eval-corpus", help="Held-out text, raw or prepared "
                                                                          "(default: the corpus tail)."),
    recipe: str = typer.Option("triple", "--recipe", help="triple: DistilBERT's loss against a masked-LM teacher; "
                                                          "headless: last-layer attention KL + value relation + "
                                                          "hidden cosine, no MLM head (MiniLM-style)."),
    fit_mlm_head: bool = typer.Option(False, "--fit-mlm-head", help="Fit an MLM head on the frozen teacher first."),
    head_steps: int = 300,
    max_steps: int = typer.Option(1000, "--max-steps"), save_steps: int = typer.Option(200, "--save-steps"),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps", help="Log the loss every N steps "
                                                                              "(default: max-steps/20, at most 50)."),
    batch_size: int = 32, grad_accum: int = typer.Option(1, "--grad-accum"), lr: float = 5e-4, max_len: int = 128,
    seed: int = 42,
    alpha_ce: Optional[float] = typer.Option(None, "--alpha-ce", help="triple: weight of L_ce (default 5)."),
    alpha_mlm: Optional[float] = typer.Option(None, "--alpha-mlm", help="triple: weight of L_mlm (default 2)."),
    alpha_cos: float = typer.Option(1.0, "--alpha-cos", help="Weight of L_cos (last hidden states)."),
    alpha_mse: Optional[float] = typer.Option(None, "--alpha-mse", help="triple: weight of the logit MSE (default 0)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="triple: softmax temperature (default 2)."),
    alpha_attn: Optional[float] = typer.Option(None, "--alpha-attn", help="headless: weight of the last-layer "
                                                                          "attention KL (default 1)."),
    alpha_value: Optional[float] = typer.Option(None, "--alpha-value", help="headless: weight of the value-relation "
                                                                            "KL (default 1)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """General distillation on raw text: 5·L_ce + 2·L_mlm + 1·L_cos against a masked-LM teacher, or with
    --recipe headless 1·L_attn + 1·L_value + 1·L_cos against any encoder (torchrun-ready)."""
    from ..stages.general import pretrain as run_pretrain
    from ..train.common import TrainConfig
    from ..train.general import HeadlessLossConfig, TripleLossConfig

    own = {"triple": {"--alpha-ce": alpha_ce, "--alpha-mlm": alpha_mlm, "--alpha-mse": alpha_mse,
                      "--temperature": temperature},
           "headless": {"--alpha-attn": alpha_attn, "--alpha-value": alpha_value}}
    if recipe not in own:
        raise ConfigError(f"--recipe {recipe!r}: expected triple or headless")
    other = [name for r, opts in own.items() if r != recipe for name, value in opts.items() if value is not None]
    if other:
        raise ConfigError(f"{', '.join(other)} belong to the other recipe, not --recipe {recipe}")

    def given(value: Optional[float], default: float) -> float:
        return default if value is None else value

    if recipe == "headless":
        loss = HeadlessLossConfig(alpha_attn=given(alpha_attn, 1.0), alpha_value=given(alpha_value, 1.0),
                                  alpha_cos=alpha_cos)
    else:
        loss = TripleLossConfig(alpha_ce=given(alpha_ce, 5.0), alpha_mlm=given(alpha_mlm, 2.0), alpha_cos=alpha_cos,
                                alpha_mse=given(alpha_mse, 0.0), temperature=given(temperature, 2.0))
    cfg = TrainConfig(max_steps=max_steps, save_steps=save_steps, batch_size=batch_size, learning_rate=lr,
                      max_length=max_len, seed=seed, bf16=bf16, gradient_accumulation=grad_accum,
                      logging_steps=logging_steps or max(1, min(50, max_steps // 20)))
    info = run_pretrain(teacher_path(teacher), corpus, out, cfg, loss, student=student_dir, layers=layers,
                        eval_corpus=eval_corpus, fit_head=fit_mlm_head, head_steps=head_steps, max_len=max_len,
                        overwrite=overwrite, resume=resume)
    if "student_mlm_accuracy" in info:  # the main process (the only one under torchrun that evaluates)
        console.print(f"masked-token accuracy: teacher {info['teacher_mlm_accuracy'] * 100:.1f}%, "
                      f"student {info['student_mlm_accuracy'] * 100:.1f}% → {out}/pretrain.json")
    elif "attention_kl_after" in info:
        cos = (f", hidden-state cosine {info['hidden_cosine_before']:.4f} → {info['hidden_cosine_after']:.4f}"
               if info["hidden_cosine_after"] is not None else "")
        console.print(f"held-out last-layer attention KL {info['attention_kl_before']:.4f} → "
                      f"{info['attention_kl_after']:.4f}{cos} → {out}/pretrain.json", highlight=False)


@command("corpus")
def corpus_cmd(
    source: str = typer.Argument(..., help="Text file, folder of text files, or hub dataset name[:config]."),
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    max_len: int = typer.Option(128, "--max-len", help="Longest packed sequence, [CLS] and [SEP] included."),
    overwrite: bool = OverwriteOpt,
):
    """Prepare a corpus for `distil pretrain`: packed token sequences (Arrow), token counts, corpus.json."""
    from ..stages.general import corpus_stage

    info = corpus_stage(source, teacher_path(teacher), out, max_len, overwrite)
    console.print(f"{info['sequences']:,} sequences, {info['tokens']:,} tokens (max_len {max_len}) → {out}")
