"""--trim-vocab: the student keeps the special tokens, the training texts' alphabet and tokens; outputs on
in-vocabulary text are unchanged, dropped tokens fall back to shorter pieces then [UNK], and the trimmed
student exports, serves and loads in sentence-transformers."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from distilkit.errors import ConfigError
from distilkit.models.vocab import VocabTrim, changed_tokens, choose_vocab, trim_vocabulary

from .conftest import WORDS, sentences

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# in the teacher's vocabulary, never in the training texts: trimming drops them
ABSENT = ["films", "wonderful", "cinema", "zoo", "##ly", "##ness"]
LETTERS = list(string.ascii_lowercase)
VOCAB = list(dict.fromkeys(SPECIALS + WORDS + ABSENT + LETTERS + ["##" + c for c in LETTERS]))
TRAIN = [s for s, _ in sentences(40, 1)]  # the conftest words only (no z, no q...)
IN_VOCAB = ["a good film", "the plot was very dull", "not a bad movie"]


def vocab_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)


def save_teacher(folder: Path, cls_name: str) -> Path:
    import transformers

    from .conftest import tiny_bert_config

    torch.manual_seed(0)
    tokenizer = vocab_tokenizer(folder)
    config = tiny_bert_config(vocab_size=len(VOCAB), num_labels=2, id2label={0: "negative", 1: "positive"},
                              label2id={"negative": 0, "positive": 1})
    getattr(transformers, cls_name)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_teacher(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("vocab_teacher"), "BertForSequenceClassification")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return vocab_tokenizer(tmp_path_factory.mktemp("vocab_tok"))


def _student(teacher: Path):
    from distilkit.models.loading import load_any
    from distilkit.models.student import build_student

    return build_student(load_any(str(teacher)), [0, 2]).eval()


def test_choose_vocab_keeps_specials_alphabet_and_text_tokens(tokenizer):
    kept, summary = choose_vocab(tokenizer, TRAIN)
    tokens = set(tokenizer.convert_ids_to_tokens(kept))
    assert set(SPECIALS) <= tokens
    used = {w for s in TRAIN for w in s.split()}
    assert used <= tokens
    assert not set(ABSENT) & tokens
    chars = {c for s in TRAIN for c in s if c != " "}
    assert {c for c in chars} | {"##" + c for c in chars} <= tokens
    assert "z" not in tokens and "##z" not in tokens  # never in the training text
    assert kept == sorted(kept) and summary["kept"] == len(kept) == summary["specials"] + summary["alphabet"] + summary["from_texts"]
    assert summary["dropped"] == len(VOCAB) - len(kept)


def test_vocab_size_keeps_the_most_frequent(tokenizer):
    full, summary = choose_vocab(tokenizer, TRAIN)
    floor = summary["specials"] + summary["alphabet"]
    kept, capped = choose_vocab(tokenizer, TRAIN, max_size=floor + 3)
    assert len(kept) == floor + 3 and capped["from_texts"] == 3
    counts = {}
    for s in TRAIN:
        for w in s.split():
            counts[w] = counts.get(w, 0) + 1
    vocab = tokenizer.get_vocab()
    multi = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], vocab[w]))  # not single characters
    assert set(multi[:3]) <= set(tokenizer.convert_ids_to_tokens(kept))
    assert not set(multi[3:]) & set(tokenizer.convert_ids_to_tokens(kept))
    with pytest.raises(ConfigError, match="below the 5 special tokens"):
        choose_vocab(tokenizer, TRAIN, max_size=floor - 1)


def test_trimmed_logits_equal_untrimmed(classifier_teacher):
    from distilkit.models.folders import load_tokenizer

    teacher_tok = load_tokenizer(str(classifier_teacher))
    student = _student(classifier_teacher)
    reference = _student(classifier_teacher)
    trimmed, new_tok, summary = trim_vocabulary(student, teacher_tok, TRAIN, dev_texts=IN_VOCAB)
    assert trimmed.config.vocab_size == summary["kept"] < len(VOCAB)
    assert trimmed.get_input_embeddings().weight.shape[0] == summary["kept"]
    with torch.no_grad():
        before = reference(**teacher_tok(IN_VOCAB, padding=True, return_tensors="pt",
                                         return_token_type_ids=False)).logits
        after = trimmed(**new_tok(IN_VOCAB, padding=True, return_tensors="pt", return_token_type_ids=False)).logits
    assert torch.allclose(before, after, atol=1e-6)
    assert summary["dev"]["changed_tokens"] == 0 and summary["dev"]["changed_share"] == 0.0


def test_mlm_head_sliced(tmp_path):
    teacher = save_teacher(tmp_path / "mlm", "BertForMaskedLM")
    from distilkit.models.folders import load_tokenizer

    tok = load_tokenizer(str(teacher))
    student, reference = _student(teacher), _student(teacher)
    trimmed, new_tok, summary = trim_vocabulary(student, tok, TRAIN)
    kept = [tok.get_vocab()[t] for t in new_tok.convert_ids_to_tokens(list(range(summary["kept"])))]
    with torch.no_grad():
        before = reference(**tok(IN_VOCAB, padding=True, return_tensors="pt", return_token_type_ids=False)).logits
        after = trimmed(**new_tok(IN_VOCAB, padding=True, return_tensors="pt", return_token_type_ids=False)).logits
    assert after.shape[-1] == summary["kept"]
    assert torch.allclose(before[..., kept], after, atol=1e-6)
    assert trimmed.vocab_projector.weight.data_ptr() == trimmed.get_input_embeddings().weight.data_ptr()


def test_tokenizer_reloads_and_falls_back(classifier_teacher, tmp_path):
    from transformers import AutoTokenizer

    from distilkit.models.folders import load_tokenizer

    teacher_tok = load_tokenizer(str(classifier_teacher))
    _, new_tok, _ = trim_vocabulary(_student(classifier_teacher), teacher_tok, TRAIN)
    new_tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.get_vocab() == new_tok.get_vocab()
    for text in IN_VOCAB + ["The FILM, was good!"]:
        assert again.tokenize(text) == teacher_tok.tokenize(text)
        ids = again(text)["input_ids"]
        assert again.convert_ids_to_tokens(ids)[0] == "[CLS]" and again.convert_ids_to_tokens(ids)[-1] == "[SEP]"
    assert again.pad_token_id == again.convert_tokens_to_ids("[PAD]")
    # dropped whole words fall back to kept pieces, then to single characters
    assert teacher_tok.tokenize("films") == ["films"]
    assert again.tokenize("films") == ["film", "##s"]
    assert again.tokenize("goodly") == ["good", "##l", "##y"]  # ##ly dropped
    # a word with a character never seen in training: [UNK]
    assert teacher_tok.tokenize("zoo") == ["zoo"]
    assert again.tokenize("zoo") == ["[UNK]"]
    report = changed_tokens(teacher_tok, again, ["a good films", "zoo"])
    assert report["tokens"] == 4 and report["changed_tokens"] == 2 and report["changed_share"] == 0.5
    assert report["unk_teacher"] == 0 and report["unk_trimmed"] == 1


def test_non_wordpiece_refused(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "<unk>": 1}, merges=[],
                                                                        unk_token="<unk>")), unk_token="<unk>")
    with pytest.raises(ConfigError, match="WordPiece tokenizers .* is BPE"):
        choose_vocab(bpe, TRAIN)
    with pytest.raises(ConfigError, match="--vocab-size must be >= 1"):
        VocabTrim(size=0)


# --- the stages and deployment -------------------------------------------------------------------------

FAST = dict(epochs=1, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=100, logging_steps=2)
UNSEEN = ["wonderful films", "a zoo of cinema"]  # dropped words: shorter pieces, then [UNK]


@pytest.fixture(scope="module")
def trimmed_student(classifier_teacher, tmp_path_factory) -> Path:
    """`distil student --trim-vocab --vocab-corpus FILE` on the classifier teacher."""
    from typer.testing import CliRunner

    from distilkit.cli import app

    root = tmp_path_factory.mktemp("trimmed")
    (root / "corpus.txt").write_text("\n".join(TRAIN) + "\n")
    result = CliRunner().invoke(app, ["student", "--teacher", str(classifier_teacher), "--out", str(root / "s"),
                                      "--layers", "0,2", "--trim-vocab", "--vocab-corpus", str(root / "corpus.txt")])
    assert result.exit_code == 0, result.output
    return root / "s"


def test_student_command_records_the_vocabulary(trimmed_student, classifier_teacher):
    from transformers import AutoTokenizer

    info = json.loads((trimmed_student / "distil.json").read_text())
    vocab = info["vocab"]
    assert info["trim_vocab"] == {"trim_vocab": True, "vocab_size": None, "vocab_corpus": vocab["vocab_corpus"]}
    assert vocab["teacher_vocab"] == len(VOCAB) and vocab["kept"] < len(VOCAB) and vocab["corpus_texts"] == len(TRAIN)
    assert info["parameters"]["student"]["embedding"] < info["parameters"]["teacher"]["embedding"]
    lines = (trimmed_student / "vocab.txt").read_text().splitlines()
    tok = AutoTokenizer.from_pretrained(trimmed_student)
    assert len(lines) == vocab["kept"] and [tok.convert_tokens_to_ids(t) for t in lines] == list(range(len(lines)))
    assert tok.tokenize("wonderful films")[:2] == ["w", "##o"]


def test_trimmed_student_exports_predicts_and_serves(trimmed_student, tmp_path):
    import numpy as np
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from distilkit.cli import app
    from distilkit.deploy.backends import load_backend
    from distilkit.deploy.export import export_onnx
    from distilkit.deploy.serve import create_app

    out = tmp_path / "onnx"
    export_onnx(trimmed_student, out)
    texts = IN_VOCAB + UNSEEN
    np.testing.assert_allclose(load_backend(out, "onnx")(texts), load_backend(trimmed_student, "torch")(texts),
                               atol=1e-4)
    result = CliRunner().invoke(app, ["predict", str(out), "--backend", "onnx", *texts])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == len(texts)
    with TestClient(create_app(out, "onnx-int8")) as client:
        r = client.post("/v1/classify", json={"texts": texts})
    assert r.status_code == 200, r.text
    assert {row["label"] for row in r.json()["results"]} <= {"negative", "positive"}


def test_task_distillation_trims_and_trains_on_its_own_tokens(classifier_teacher, tiny_glue, tmp_path):
    from transformers import AutoTokenizer

    from distilkit.data.task import load_task_data
    from distilkit.stages.task import distil_task
    from distilkit.train.common import TrainConfig
    from distilkit.train.task import DistillConfig

    data = load_task_data("sst2", tiny_glue)
    info = distil_task(str(classifier_teacher), data, TrainConfig(**FAST), DistillConfig(hidden_weight=1.0),
                       tmp_path / "student", tmp_path / "cache", layers="0,2", trim=VocabTrim())
    vocab = info["vocab"]
    assert vocab["kept"] < len(VOCAB) and vocab["dev"]["tokens"] > 0 and vocab["dev"]["changed_share"] == 0.0
    assert 0 <= info["metrics"]["accuracy"] <= 1
    tok = AutoTokenizer.from_pretrained(tmp_path / "student")
    assert len(tok.get_vocab()) == vocab["kept"]


def test_embedding_student_trimmed_loads_in_sentence_transformers(tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    from distilkit.models.pooling import Pooling, write_sentence_transformers_files
    from distilkit.stages.embedding import distil_embeddings
    from distilkit.train.embedding import EmbedConfig

    from .conftest import tiny_bert_config

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    tok = vocab_tokenizer(teacher)
    BertModel(tiny_bert_config(vocab_size=len(VOCAB), initializer_range=0.3), add_pooling_layer=False).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    write_sentence_transformers_files(teacher, Pooling("mean", True), 32, 64)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TRAIN) + "\n")
    quiet = dict(layers="0,2", cache_dir=tmp_path / "cache", say=lambda m: None)
    untrained = EmbedConfig(epochs=0, max_length=32)
    distil_embeddings(str(teacher), [corpus], tmp_path / "plain", untrained, **quiet)
    info = distil_embeddings(str(teacher), [corpus], tmp_path / "trimmed", untrained, trim=VocabTrim(), **quiet)
    assert info["vocab"]["kept"] < len(VOCAB)
    plain = SentenceTransformer(str(tmp_path / "plain"), device="cpu").encode(IN_VOCAB)
    trimmed = SentenceTransformer(str(tmp_path / "trimmed"), device="cpu")
    np.testing.assert_allclose(trimmed.encode(IN_VOCAB), plain, atol=1e-6)
    assert trimmed.encode(UNSEEN).shape == (2, 32)
    trained = distil_embeddings(str(teacher), [corpus], tmp_path / "trained", EmbedConfig(epochs=1, batch_size=8,
                                max_length=32), trim=VocabTrim(size=info["vocab"]["kept"] - 2), **quiet)
    assert trained["vocab"]["kept"] == info["vocab"]["kept"] - 2 and trained["train"]["steps"] > 0
    assert SentenceTransformer(str(tmp_path / "trained"), device="cpu").encode(UNSEEN).shape == (2, 32)


def test_run_trims_the_student_init_and_resumes_only_with_the_same_setting(classifier_teacher, tiny_glue, tmp_path):
    from distilkit.data.task import load_task_data
    from distilkit.experiments.run import run_pipeline
    from distilkit.stages.reuse import StageConfigError
    from distilkit.stages.task import task_stages
    from distilkit.train.common import TrainConfig
    from distilkit.train.task import DistillConfig

    data = load_task_data("sst2", tiny_glue)
    cfg = TrainConfig(**FAST)
    out = tmp_path / "run"
    metrics = run_pipeline(str(classifier_teacher), data, out, cfg, cfg, DistillConfig(), layers="0,2",
                           trim=VocabTrim(size=60))
    init = json.loads((out / "student_init" / "distil.json").read_text())
    student = json.loads((out / "student" / "distil.json").read_text())
    assert init["vocab"]["kept"] == 60 and student["vocab"] == init["vocab"] and "dev" in init["vocab"]
    for name in ("student", "baseline"):
        assert metrics["models"][name]["parameters"]["embedding"] < metrics["models"]["teacher"]["parameters"]["embedding"]
    again = task_stages(str(classifier_teacher), data, cfg, cfg, DistillConfig(), out, out / "cache", layers="0,2",
                        trim=VocabTrim(size=60))
    assert again["student"]["vocab"]["kept"] == 60
    with pytest.raises(StageConfigError, match="trim_vocab"):
        task_stages(str(classifier_teacher), data, cfg, cfg, DistillConfig(), out, out / "cache", layers="0,2")


def test_cli_vocab_options_need_trim_vocab(classifier_teacher, tmp_path):
    from typer.testing import CliRunner

    from distilkit.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["student", "--teacher", str(classifier_teacher), "--out", str(tmp_path / "s"),
                                 "--vocab-size", "50"])
    assert result.exit_code == 2 and "go with --trim-vocab" in result.output
    result = runner.invoke(app, ["student", "--teacher", str(classifier_teacher), "--out", str(tmp_path / "s"),
                                 "--trim-vocab"])
    assert result.exit_code == 2 and "--vocab-corpus" in result.output
