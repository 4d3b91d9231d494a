"""Every `distil` command turns a bad option value into exit status 2 and a one-line `error: ...` naming it.

Each case gives one value our own code checks (not a typer type error), checked before any training,
export or download, so the test is quick: a tiny teacher, a tiny exported student and tiny SST-2 data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distilkit.cli import app

from .deploy_fixtures import tiny_student  # noqa: F401

# (command, arguments, text the message must contain). Placeholders: {teacher} the tiny random BERT encoder,
# {student} the tiny exported DistilBERT SST-2 classifier, {data} the tiny glue_data folder, {tmp} a fresh folder.
CASES = [
    ("student", ["--teacher", "{teacher}", "--out", "{tmp}/student", "--layers", "0,99"], "99"),
    ("finetune", ["--teacher", "{teacher}", "--out", "{tmp}/teacher", "--task", "nope", "--data", "{data}"], "nope"),
    ("task", ["--teacher", "{teacher}", "--out", "{tmp}/task", "--data", "{data}", "--alpha", "2"], "--alpha"),
    ("eval", ["{student}", "--task", "nope", "--data", "{data}", "--out", "{tmp}/metrics.json"], "nope"),
    ("embed", ["--teacher", "{teacher}", "--corpus", "{data}", "--out", "{tmp}/embed", "--layers", "0,99"], "99"),
    ("run", ["--teacher", "{teacher}", "--out", "{tmp}/run", "--data", "{data}", "--alpha", "2"], "--alpha"),
    ("run", ["--teacher", "{teacher}", "--out", "{tmp}/run", "--data", "{data}", "--positive-label", "good"],
     "--positive-label is for your own"),
    ("glue", ["--teacher", "{teacher}", "--out", "{tmp}/glue", "--data", "{data}", "--tasks", "nope"], "nope"),
    ("sweep", ["--teacher", "{teacher}", "--out", "{tmp}/sweep", "--data", "{data}", "--precisions", "fp8"], "fp8"),
    ("pretrain", ["--teacher", "{teacher}", "--corpus", "{data}", "--out", "{tmp}/pretrain", "--recipe", "nope"],
     "--recipe"),
    ("corpus", ["{tmp}/missing-corpus.txt", "--teacher", "{teacher}", "--out", "{tmp}/corpus"], "missing-corpus.txt"),
    ("export", ["{student}", "--task", "nope", "--data", "{data}", "--out", "{tmp}/onnx"], "nope"),
    ("bench", ["--student", "{student}", "--seq", "abc", "--out", "{tmp}/bench"], "--seq"),
    ("predict", ["{student}", "good film", "--format", "xml"], "xml"),
    ("serve", ["{student}", "--backend", "nope", "--port", "1"], "nope"),
]


def test_every_command_has_a_case():
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert names == {case[0] for case in CASES}


@pytest.mark.parametrize("command, args, named", CASES, ids=[case[0] for case in CASES])
def test_bad_option_value_exits_2_with_one_line(command, args, named, tiny_teacher, tiny_glue, tmp_path,
                                                tiny_student):  # noqa: F811
    # a long folder name, so that the message is longer than the 80 columns of the test terminal
    tmp = tmp_path / ("a-rather-long-folder-name-so-the-message-does-not-fit-in-eighty-columns-" * 2)
    tmp.mkdir()
    values = {"teacher": tiny_teacher, "student": tiny_student, "data": tiny_glue, "tmp": tmp}
    argv = [command] + [a.format(**values) for a in args]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "80"})
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), result.exception
    assert len(output.splitlines()) == 1 and output.startswith("error: "), output
    assert "Traceback" not in output
    assert named in output, output
    assert not any(tmp.iterdir()), "the command wrote output before failing"


GLUE = ["--teacher", "{teacher}", "--data", "{data}", "--out", "{tmp}/out"]


@pytest.mark.parametrize("argv, named", [
    (["glue", "--tasks", "sst2", "--sweep-depths", "1", "--sweep-precisions", "fp8", "--overwrite", *GLUE],
     "--sweep-precisions"),
    (["glue", "--tasks", "sst2", "--sweep-depths", "1,9", "--overwrite", *GLUE], "--sweep-depths 9"),
    (["sweep", "--depths", "1,9", *GLUE], "--depths 9"),
    (["serve", "{student}", "--max-batch", "0"], "--max-batch 0"),
    (["predict", "{student}", "--file", "{tmp}/texts.txt", "--format", "xml"], "--format 'xml'"),
    (["pretrain", "--teacher", "{teacher}", "--corpus", "{tmp}/missing.txt", "--out", "{tmp}/pretrain",
      "--recipe", "headless"], "missing.txt"),
], ids=["glue-sweep-precisions", "glue-sweep-depths", "sweep-depths", "serve-limits", "predict-format-file",
        "pretrain-missing-corpus"])
def test_more_bad_values_fail_before_any_work(argv, named, tiny_teacher, tiny_student, tiny_glue,  # noqa: F811
                                              tmp_path):
    """Checked before training (glue's sweep options, sweep depths deeper than the teacher), before the model loads
    (serve's limits), before the input is read (predict --format); glue --overwrite keeps OUT when they fail."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("finished work\n")
    (tmp_path / "texts.txt").write_text("good film\n")
    values = {"teacher": tiny_teacher, "student": tiny_student, "data": tiny_glue, "tmp": tmp_path}
    argv = [a.format(**values) for a in argv]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "80"})
    output = result.output.strip()
    assert result.exit_code == 2 and len(output.splitlines()) == 1 and output.startswith("error: "), output
    assert named in output, output
    assert (tmp_path / "out" / "keep.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_configs_are_built_by_keyword():
    from distilkit.deploy.serve import Limits
    from distilkit.train.common import TrainConfig
    from distilkit.train.embedding import EmbedConfig
    from distilkit.train.general import HeadlessLossConfig, TripleLossConfig
    from distilkit.train.task import DistillConfig

    for config in (TrainConfig, DistillConfig, EmbedConfig, TripleLossConfig, HeadlessLossConfig, Limits):
        with pytest.raises(TypeError):
            config(1.0)
        assert config() == config(**vars(config()))
