"""Narrow students (--hidden-size, --intermediate-size): the chosen teacher dimensions are copied exactly."""

from __future__ import annotations

import pytest
import torch

from distilkit.errors import ConfigError
from distilkit.models.narrow import narrow_student


def _student(tiny_teacher, cls="BertForSequenceClassification"):
    import transformers

    from distilkit.models.student import build_student

    from .conftest import tiny_bert_config

    torch.manual_seed(1)
    teacher = getattr(transformers, cls)(tiny_bert_config(num_labels=2)).eval()
    return build_student(teacher, [0, 2]).eval()


@pytest.mark.parametrize("cls", ["BertForSequenceClassification", "BertForMaskedLM", "BertModel"])
def test_narrow_copies_the_chosen_dims_exactly(cls):
    wide = _student(None, cls)
    narrow, dims = narrow_student(wide, hidden_size=16, intermediate_size=24)
    h = torch.tensor(dims["hidden"])
    assert narrow.config.dim == 16 and narrow.config.hidden_dim == 24 and narrow.config.n_heads == 4
    assert len(h) == 16 and h.tolist() == sorted(set(h.tolist()))
    base, nb = wide.base_model, narrow.base_model
    assert torch.equal(nb.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight[:, h])
    assert torch.equal(nb.embeddings.LayerNorm.weight, base.embeddings.LayerNorm.weight[h])
    for i, (old, new) in enumerate(zip(base.transformer.layer, nb.transformer.layer)):
        a, f = torch.tensor(dims["attention"][i]), torch.tensor(dims["ffn"][i])
        assert len(a) == 16 and len(f) == 24
        assert [int(x) // 8 for x in a] == [k // 4 for k in range(16)]  # 4 dims from each of the 4 heads, in order
        assert torch.equal(new.attention.q_lin.weight, old.attention.q_lin.weight[a][:, h])
        assert torch.equal(new.attention.v_lin.bias, old.attention.v_lin.bias[a])
        assert torch.equal(new.attention.out_lin.weight, old.attention.out_lin.weight[h][:, a])
        assert torch.equal(new.ffn.lin1.weight, old.ffn.lin1.weight[f][:, h])
        assert torch.equal(new.ffn.lin2.weight, old.ffn.lin2.weight[h][:, f])
        assert torch.equal(new.output_layer_norm.bias, old.output_layer_norm.bias[h])
    if cls == "BertForSequenceClassification":
        assert torch.equal(narrow.pre_classifier.weight, wide.pre_classifier.weight[h][:, h])
        assert torch.equal(narrow.classifier.weight, wide.classifier.weight[:, h])
        assert torch.equal(narrow.classifier.bias, wide.classifier.bias)
    if cls == "BertForMaskedLM":
        assert narrow.vocab_projector.weight.data_ptr() == nb.embeddings.word_embeddings.weight.data_ptr()
        assert torch.equal(narrow.vocab_projector.bias, wide.vocab_projector.bias)
    out = narrow(input_ids=torch.tensor([[2, 7, 9, 3]]))
    assert torch.isfinite(out[0]).all()


def test_narrow_keeps_the_largest_dims_and_refuses_bad_sizes():
    wide = _student(None)
    with torch.no_grad():
        wide.base_model.embeddings.word_embeddings.weight[:, 5] *= 100  # a dominant residual dim
    _, dims = narrow_student(wide, hidden_size=4, intermediate_size=8)
    assert 5 in dims["hidden"]
    with pytest.raises(ConfigError, match="multiple of the 4 attention heads"):
        narrow_student(wide, hidden_size=10, intermediate_size=8)
    with pytest.raises(ConfigError, match="--intermediate-size in 1..64"):
        narrow_student(wide, hidden_size=16, intermediate_size=65)


def test_student_command_narrows(tiny_teacher, tmp_path):
    import json

    from typer.testing import CliRunner

    from distilkit.cli import app
    from distilkit.models.loading import load_any

    result = CliRunner().invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"),
                                      "--hidden-size", "16", "--intermediate-size", "32"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "s" / "distil.json").read_text())
    assert info["narrow"]["hidden_size"] == 16 and len(info["narrow"]["hidden_dims"]) == 16
    model = load_any(str(tmp_path / "s"))
    assert model.config.dim == 16 and model.config.hidden_dim == 32
    assert info["parameters"]["student"]["total"] < info["parameters"]["teacher"]["total"] / 3
    result = CliRunner().invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "t"),
                                      "--hidden-size", "16"])
    assert result.exit_code == 2 and "go together" in result.output
