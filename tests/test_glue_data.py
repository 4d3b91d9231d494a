"""GLUE loading (real ../shared files and synthetic layouts), bad input, and the user's own files."""
import os
from collections import Counter
from pathlib import Path

import datasets
import pytest

from distilkit.data import DataError, GLUE_TASKS, get_task, load_glue_split, load_table


def shared_glue_dir() -> Path:
    env = os.environ.get("DISTILKIT_GLUE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not path.is_dir():
        pytest.skip(f"../shared/data/glue not found: looked in {path} (set DISTILKIT_GLUE_DIR to the glue_data folder)")
    return path


OFFICIAL_ROWS = [("cola", "train", 8551), ("cola", "dev", 1043), ("sst2", "train", 67349), ("sst2", "dev", 872),
                 ("mrpc", "train", 3668), ("mrpc", "dev", 408), ("stsb", "train", 5749), ("stsb", "dev", 1500)]


# --- real GLUE files --------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("task,split,rows", OFFICIAL_ROWS)
def test_real_glue_row_counts(task, split, rows):
    ds = load_glue_split(get_task(task), split, shared_glue_dir())
    assert len(ds) == rows
    assert all(t.strip() for t in ds["text"])


@pytest.mark.integration
def test_real_glue_known_rows():
    d = shared_glue_dir()
    stsb = load_glue_split(get_task("STS-B"), "dev", d)
    assert stsb[0] == {"text": "A man with a hard hat is dancing.",
                       "text_pair": "A man wearing a hard hat is dancing.", "label": 5.0}
    assert stsb.features["label"].dtype == "float32"
    assert 0.0 <= min(stsb["label"]) and max(stsb["label"]) <= 5.0

    mrpc = load_glue_split(get_task("mrpc"), "train", d)  # file starts with a BOM before "Quality"
    assert mrpc[0]["label"] == 1 and mrpc[0]["text"].startswith("Amrozi accused his brother")
    assert Counter(load_glue_split(get_task("mrpc"), "dev", d)["label"]) == {1: 279, 0: 129}

    cola = load_glue_split(get_task("cola"), "dev", d)  # no header, no trailing newline
    assert Counter(cola["label"]) == {1: 721, 0: 322}
    assert cola[-1]["text"] and cola[0]["text"] == "The sailors rode the breeze clear of the rocks."

    sst2 = load_glue_split(get_task("sst-2"), "dev", d)
    assert Counter(sst2["label"]) == {1: 444, 0: 428}
    assert "text_pair" not in sst2.column_names


@pytest.mark.integration
def test_real_glue_limit_and_test_split():
    d = shared_glue_dir()
    assert load_glue_split(get_task("sst2"), "train", d, limit=10)["text"][:2] == [
        "hide new secretions from the parental units ", "contains no wit , only labored gags "]
    assert len(load_glue_split(get_task("sst2"), "train", d, limit=10)) == 10
    test = load_glue_split(get_task("cola"), "test", d)  # CoLA test has a header and no labels
    assert len(test) == 1063 and set(test["label"]) == {-1}


# --- registry ---------------------------------------------------------------------------------

def test_registry():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    for alias, name in [("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"), ("MNLI", "mnli")]:
        assert get_task(alias).name == name
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
    assert get_task("mnli").labels == ("entailment", "neutral", "contradiction")  # hub order
    assert get_task("cola").metrics == ("mcc",) and get_task("mrpc").metrics == ("f1", "accuracy")
    with pytest.raises(DataError, match="known tasks: cola, sst2"):
        get_task("squad")


# --- synthetic layouts of the tasks not in ../shared -------------------------------------------

def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(end.join(lines) + end, encoding="utf-8")
    return path


def test_qqp(tmp_path):
    write(tmp_path / "QQP" / "dev.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                         '1\t2\t3\tWhat is "AI"?\tWhat\'s AI?\t1',
                                         "4\t5\t6\tHow old?\tWhere?\t0"], end="\r\n")
    ds = load_glue_split(get_task("qqp"), "dev", tmp_path)
    assert ds["text"] == ['What is "AI"?', "How old?"] and ds["text_pair"] == ["What's AI?", "Where?"]
    assert ds["label"] == [1, 0]


def test_mnli_matched_and_mismatched(tmp_path):
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    write(tmp_path / "MNLI" / "dev_matched.tsv", [header, "0\t1\t2\tfiction\tA man sleeps.\tA person rests.\tentailment\tentailment",
                                                  "1\t1\t2\tfiction\tA \"quoted\" cat.\tA dog.\tcontradiction\tcontradiction"])
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", [header, "0\t1\t2\tletters\tIt rains.\tIt is sunny.\tneutral\tneutral"])
    task = get_task("mnli")
    matched = load_glue_split(task, "dev_matched", tmp_path)
    assert matched["label"] == [0, 2] and matched["text"][1] == 'A "quoted" cat.'
    assert load_glue_split(task, "dev_mismatched", tmp_path)["label"] == [1]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_glue_split(task, "dev", tmp_path)


@pytest.mark.parametrize("task,folder,header,row,label", [
    ("qnli", "QNLI", "index\tquestion\tsentence\tlabel", "0\tWho?\tHe did.\tnot_entailment", 1),
    ("rte", "RTE", "index\tsentence1\tsentence2\tlabel", "0\tA dog barks.\tAn animal makes noise.\tentailment", 0),
    ("wnli", "WNLI", "index\tsentence1\tsentence2\tlabel", "0\tI saw it.\tIt was seen.\t1", 1),
])
def test_pair_tasks(tmp_path, task, folder, header, row, label):
    write(tmp_path / folder / "train.tsv", [header, row])
    ds = load_glue_split(get_task(task), "train", tmp_path)
    assert ds.column_names == ["text", "text_pair", "label"]
    assert ds[0]["text"] == row.split("\t")[1] and ds[0]["text_pair"] == row.split("\t")[2]
    assert ds[0]["label"] == label


def test_hub_path_renames_fields(monkeypatch):
    hub = datasets.Dataset.from_dict(
        {"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [1, 0, 1], "idx": [0, 1, 2]},
        features=datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                                    "idx": datasets.Value("int32")}))
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return hub.select(range(2)) if split.endswith("[:2]") else hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_glue_split(get_task("mrpc"), "dev", None, limit=2)
    assert calls == [("nyu-mll/glue", "mrpc", "validation[:2]")]
    assert ds.column_names == ["text", "text_pair", "label"] and ds["label"] == [1, 0]
    assert ds.features["label"].names == ["0", "1"]


# --- bad GLUE input ---------------------------------------------------------------------------

def test_missing_column(tmp_path):
    write(tmp_path / "SST-2" / "train.tsv", ["sentence\tlabel", "good film\t1", "no label here"])
    with pytest.raises(DataError, match=r"train\.tsv, line 3: missing column 'label'"):
        load_glue_split(get_task("sst2"), "train", tmp_path)


def test_missing_column_headerless_cola(tmp_path):
    write(tmp_path / "CoLA" / "dev.tsv", ["gj04\t1\t\tFine.", "gj04\t0\t*"])
    with pytest.raises(DataError, match=r"dev\.tsv, line 2: missing column 'sentence'"):
        load_glue_split(get_task("cola"), "dev", tmp_path)


def test_missing_column_in_header(tmp_path):
    write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tlabel", "0\ta\tentailment"])
    with pytest.raises(DataError, match=r"dev\.tsv, line 1: no column 'sentence2'.*columns found: index, sentence1, label"):
        load_glue_split(get_task("rte"), "dev", tmp_path)


def test_label_outside_set(tmp_path):
    write(tmp_path / "RTE" / "train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\tmaybe"])
    with pytest.raises(DataError, match=r"train\.tsv, line 3, field 'label': label 'maybe' is not one of "
                                        r"\['entailment', 'not_entailment'\]"):
        load_glue_split(get_task("rte"), "train", tmp_path)


def test_bad_regression_score(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    write(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\ty\t1\tn\tn\ta\tb\tfive"])
    with pytest.raises(DataError, match=r"dev\.tsv, line 2, field 'score'.*'five'"):
        load_glue_split(get_task("stsb"), "dev", tmp_path)


@pytest.mark.parametrize("lines", [[], ["sentence\tlabel"]])
def test_empty_file(tmp_path, lines):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(DataError, match=r"SST-2.dev\.tsv"):
        load_glue_split(get_task("sst2"), "dev", tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"file not found, expected .*WNLI.train\.tsv"):
        load_glue_split(get_task("wnli"), "train", tmp_path)


# --- the user's own files ---------------------------------------------------------------------

def test_csv_with_quoted_comma(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"Great, really great",pos\nawful,neg\n"multi\nline",pos\n', encoding="utf-8")
    ds, names = load_table(path, "text", "label")
    assert names == ["neg", "pos"]
    assert ds["text"] == ["Great, really great", "awful", "multi\nline"] and ds["label"] == [1, 0, 1]
    assert ds.features["label"].names == ["neg", "pos"]


def test_tsv_pair_and_dev_label_set(tmp_path):
    write(tmp_path / "train.tsv", ["q\ta\ty", "hi\tthere\t2", "yo\tman\t10", "so\tthen\t2"])
    ds, names = load_table(tmp_path / "train.tsv", "q", "y", text_pair_column="a")
    assert names == ["2", "10"] and ds["label"] == [0, 1, 0] and ds["text_pair"][0] == "there"
    write(tmp_path / "dev.tsv", ["q\ta\ty", "ok\tfine\t10", "no\tway\t3"])
    with pytest.raises(DataError, match=r"dev\.tsv, line 3, field 'y': label '3' is not one of the training labels \['2', '10'\]"):
        load_table(tmp_path / "dev.tsv", "q", "y", text_pair_column="a", label_names=names)


def test_jsonl(tmp_path):
    write(tmp_path / "train.jsonl", ['{"text": "good", "label": 1}', "", '{"text": "bad", "label": 0}',
                                     '{"text": "fine", "label": 1}'])
    ds, names = load_table(tmp_path / "train.jsonl", "text", "label", limit=2)
    assert names == ["0", "1"] and ds["label"] == [1, 0] and len(ds) == 2
    write(tmp_path / "bad.jsonl", ['{"text": "good", "label": 1}', '{"text": "bad", label: 0}'])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        load_table(tmp_path / "bad.jsonl", "text", "label")


def test_regression(tmp_path):
    write(tmp_path / "train.csv", ["a,b,score", "x,y,0.5", "z,w,3"])
    ds, names = load_table(tmp_path / "train.csv", "a", "score", text_pair_column="b", regression=True)
    assert names is None and ds["label"] == [0.5, 3.0]
    write(tmp_path / "bad.csv", ["a,b,score", "x,y,0.5", "z,w,high"])
    with pytest.raises(DataError, match=r"bad\.csv, line 3, field 'score'.*'high'"):
        load_table(tmp_path / "bad.csv", "a", "score", text_pair_column="b", regression=True)


def test_user_file_errors(tmp_path):
    write(tmp_path / "t.csv", ["sentence,label", "hi,1"])
    with pytest.raises(DataError, match=r"t\.csv, header: no column 'text'; columns found: sentence, label"):
        load_table(tmp_path / "t.csv", "text", "label")
    write(tmp_path / "e.tsv", ["text\tlabel", "hi\t1", " \t0"])
    with pytest.raises(DataError, match=r"e\.tsv, line 3, field 'text': expected non-empty text"):
        load_table(tmp_path / "e.tsv", "text", "label")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: no data rows"):
        load_table(tmp_path / "empty.csv", "text", "label")
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        load_table(tmp_path / "nope.jsonl", "text", "label")
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        load_table(tmp_path / "data.xlsx", "text", "label")


# --- unlabelled inputs for task distillation ------------------------------------------------------

def test_unlabeled_test_split_gets_no_label_and_the_training_features(tmp_path):
    from distilkit.data.task import load_task_data

    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    write(tmp_path / "STS-B" / "train.tsv", [header + "\tscore", "0\tnews\tf\t2012\t1\ta\tb\tA cat.\tA dog.\t2.5"])
    write(tmp_path / "STS-B" / "dev.tsv", [header + "\tscore", "0\tnews\tf\t2012\t1\ta\tb\tRain.\tSnow.\t1.0"])
    write(tmp_path / "STS-B" / "test.tsv", [header, "0\tnews\tf\t2012\t1\ta\tb\tA man runs.\tA man jogs.",
                                            "1\tnews\tf\t2012\t2\ta\tb\tHi.\tHello."])
    data = load_task_data("stsb", tmp_path, unlabeled="test")
    assert data.unlabeled["text"] == ["A man runs.", "Hi."] and data.unlabeled["text_pair"] == ["A man jogs.", "Hello."]
    assert all(x != x for x in data.unlabeled["label"])  # NaN: no gold score
    assert data.unlabeled.features == data.train.features
    assert data.distillation_source == {**data.source, "unlabeled": "test"}
    assert load_task_data("stsb", tmp_path).unlabeled is None


def test_unlabeled_file_for_a_classification_task(tiny_glue, tmp_path):
    from distilkit.data.task import load_task_data

    write(tmp_path / "more.csv", ["id,sentence", "1,a fine film", "2,dull"])
    data = load_task_data("sst2", tiny_glue, unlabeled=tmp_path / "more.csv")
    assert data.unlabeled["text"] == ["a fine film", "dull"] and data.unlabeled["label"] == [-1, -1]
    assert data.distillation_source["unlabeled"] == str(tmp_path / "more.csv")
    write(tmp_path / "wrong.csv", ["text", "a fine film"])
    with pytest.raises(DataError, match=r"wrong\.csv, header: no column 'sentence'; columns found: text"):
        load_task_data("sst2", tiny_glue, unlabeled=tmp_path / "wrong.csv")
    write(tmp_path / "train.tsv", ["a\tb\ty", "hi\tthere\t1", "yo\tman\t0"])
    write(tmp_path / "pairs.jsonl", ['{"a": "hi"}'])
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 1: no column 'b'"):
        load_task_data(None, train_file=tmp_path / "train.tsv", dev_file=tmp_path / "train.tsv", text_column="a",
                       text_pair_column="b", label_column="y", unlabeled=tmp_path / "pairs.jsonl")
    with pytest.raises(DataError, match="--unlabeled test: only GLUE tasks have test splits"):
        load_task_data(None, train_file=tmp_path / "train.tsv", dev_file=tmp_path / "train.tsv", text_column="a",
                       text_pair_column="b", label_column="y", unlabeled="test")
