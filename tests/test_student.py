"""Student construction: layer choice, weight copies, DistilBERT conversion, parameter counts."""

import pytest
import torch
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertModel,
    RobertaConfig,
    RobertaModel,
)

from distilkit.models.loading import count_parameters
from distilkit.models.student import StudentError, build_student, choose_layers

from .conftest import tiny_bert_config


def teacher_model(cls=BertModel, **kw):
    torch.manual_seed(0)
    return cls(tiny_bert_config(**kw)).eval()


@pytest.mark.parametrize(
    "n, spec, k, expected",
    [
        (12, None, None, [0, 2, 4, 7, 9, 11]),
        (6, None, None, [0, 2, 4]),
        (6, "alternate", None, [0, 2, 4]),
        (6, "first-k", 2, [0, 1]),
        (6, "first-3", None, [0, 1, 2]),
        (6, "uniform", 3, [0, 2, 5]),
        (12, "uniform-4", None, [0, 4, 7, 11]),
        (6, "0,1,5", None, [0, 1, 5]),
        (4, None, 3, [0, 1, 2]),
    ],
)
def test_choose_layers(n, spec, k, expected):
    assert choose_layers(n, spec, k) == expected


@pytest.mark.parametrize("spec, k, message", [
    (None, 7, "deeper than its teacher"),
    ("0,1,2,3,4,5,5", None, "deeper than its teacher"),
    ("0,6", None, "out of range"),
    ("zero,one", None, "expected alternate"),
    (None, 0, "at least 1 layer"),
])
def test_choose_layers_rejects(spec, k, message):
    with pytest.raises(StudentError, match=message):
        choose_layers(6, spec, k)


def test_identity_map_reproduces_teacher_hidden_state():
    teacher = teacher_model()
    student = build_student(teacher, [0, 1, 2, 3]).eval()
    assert isinstance(student, DistilBertModel)
    ids = torch.randint(5, teacher.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
        got = student(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (got - expected).abs().max().item() <= 1e-5


def test_each_copied_layer_equals_its_teacher_layer():
    teacher = teacher_model()
    layers = [0, 3]
    student = build_student(teacher, layers)
    assert student.config.n_layers == 2 and student.config.dim == 32
    names = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
             "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
             "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
             "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
    s, t = student.state_dict(), teacher.state_dict()
    for new, old in enumerate(layers):
        for distil_name, bert_name in names.items():
            for kind in ("weight", "bias"):
                assert torch.equal(s[f"transformer.layer.{new}.{distil_name}.{kind}"],
                                   t[f"encoder.layer.{old}.{bert_name}.{kind}"])
    assert torch.equal(s["embeddings.word_embeddings.weight"], t["embeddings.word_embeddings.weight"])
    folded = t["embeddings.position_embeddings.weight"] + t["embeddings.token_type_embeddings.weight"][0]
    assert torch.equal(s["embeddings.position_embeddings.weight"], folded)
    assert not any("token_type" in k or "pooler" in k for k in s)


def test_student_copies_are_independent_of_teacher():
    teacher = teacher_model()
    student = build_student(teacher, [0, 1])
    with torch.no_grad():
        student.transformer.layer[0].attention.q_lin.weight.add_(1.0)
    assert not torch.equal(student.transformer.layer[0].attention.q_lin.weight,
                           teacher.encoder.layer[0].attention.self.query.weight)


def test_classifier_teacher_gives_distilbert_classifier_with_head_copied():
    teacher = teacher_model(BertForSequenceClassification, num_labels=3)
    student = build_student(teacher, [1, 2])
    assert isinstance(student, DistilBertForSequenceClassification)
    assert student.config.num_labels == 3
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.pre_classifier.weight, teacher.bert.pooler.dense.weight)


def test_mlm_teacher_gives_distilbert_mlm_with_tied_projector():
    teacher = teacher_model(BertForMaskedLM)
    student = build_student(teacher, [0, 2])
    assert isinstance(student, DistilBertForMaskedLM)
    assert torch.equal(student.vocab_transform.weight, teacher.cls.predictions.transform.dense.weight)
    assert student.vocab_projector.weight.data_ptr() == student.distilbert.embeddings.word_embeddings.weight.data_ptr()
    ids = torch.randint(5, teacher.config.vocab_size, (2, 7))
    full = build_student(teacher, [0, 1, 2, 3]).eval()
    with torch.no_grad():
        assert torch.allclose(full(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-4)


def test_other_families_keep_their_class():
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=40)
    teacher = RobertaModel(config).eval()
    student = build_student(teacher, [1, 3])
    assert isinstance(student, RobertaModel) and student.config.num_hidden_layers == 2
    assert torch.equal(student.encoder.layer[1].attention.self.query.weight,
                       teacher.encoder.layer[3].attention.self.query.weight)
    same = build_student(teacher, [0, 1, 2, 3]).eval()
    ids = torch.randint(3, 50, (2, 9))
    with torch.no_grad():
        assert torch.allclose(same(input_ids=ids).last_hidden_state, teacher(input_ids=ids).last_hidden_state)


def test_parameter_counts_split_embedding_and_rest():
    teacher = teacher_model()
    student = build_student(teacher, [0, 2])
    t, s = count_parameters(teacher), count_parameters(student)
    assert t["total"] == sum(p.numel() for p in teacher.parameters())
    assert t["embedding"] + t["non_embedding"] == t["total"]
    # the student drops 2 of 4 layers, the token-type table and the pooler
    layer = sum(p.numel() for p in teacher.encoder.layer[0].parameters())
    pooler = sum(p.numel() for p in teacher.pooler.parameters())
    assert s["non_embedding"] == t["non_embedding"] - 2 * layer - pooler
    assert s["embedding"] == t["embedding"] - teacher.embeddings.token_type_embeddings.weight.numel()
