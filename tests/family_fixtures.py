"""Tiny random teachers of every family in the family table: each its own config class, hidden size 32,
4 layers, 4 heads, and a tokenizer of the family's kind (BERT-style WordPiece, or a byte-pair tokenizer with
RoBERTa's <s> <pad> </s> <unk> <mask> and pad id 1, trained here with the `tokenizers` library)."""

from __future__ import annotations

from pathlib import Path

from .conftest import WORDS, make_tokenizer, sentences

SIZE = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: pad id 1, as RoBERTa's


def make_bpe_tokenizer(folder: Path):
    """A small byte-pair tokenizer trained on the tiny vocabulary's sentences, RoBERTa-style: <s> A </s>,
    <s> A </s></s> B </s>, no token types; saved as a fast tokenizer AutoTokenizer loads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=ROBERTA_SPECIALS, show_progress=False)
    tok.train_from_iterator([s for s, _ in sentences(400, seed=11)] + WORDS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                                        sep_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                        model_input_names=["input_ids", "attention_mask"])
    assert tokenizer.pad_token_id == 1 and tokenizer("good film")["input_ids"][0] == 0
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _wordpiece(folder):
    tokenizer = make_tokenizer(folder)
    return tokenizer, dict(vocab_size=len(tokenizer), pad_token_id=0)


def _bpe(folder):
    tokenizer = make_bpe_tokenizer(folder)
    # position ids start after the pad id (1), so the table needs two more rows than the longest input
    return tokenizer, dict(vocab_size=len(tokenizer), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           max_position_embeddings=66)


def _configs():
    import transformers as tf

    return {  # family: (config class, model class, tokenizer, config arguments beyond SIZE)
        "bert": (tf.BertConfig, tf.BertModel, _wordpiece, dict(max_position_embeddings=64)),
        "distilbert": (tf.DistilBertConfig, tf.DistilBertModel, _wordpiece,
                       dict(intermediate_size=None, hidden_dim=64, max_position_embeddings=64)),
        "roberta": (tf.RobertaConfig, tf.RobertaModel, _bpe, dict(type_vocab_size=1)),
        "xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaModel, _bpe, dict(type_vocab_size=1)),
        "electra": (tf.ElectraConfig, tf.ElectraModel, _wordpiece, dict(embedding_size=16, max_position_embeddings=64)),
        "mpnet": (tf.MPNetConfig, tf.MPNetModel, _bpe, {}),  # 32 relative buckets: MPNet computes with 32
        # DeBERTa-v3's shape: relative attention with shared keys, log buckets, no absolute positions
        "deberta-v2": (tf.DebertaV2Config, tf.DebertaV2Model, _wordpiece,
                       dict(max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"],
                            position_buckets=16, max_relative_positions=-1, position_biased_input=False,
                            norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0)),
        # global attention every 2nd layer, a window of 4 tokens so local and global differ on short texts
        "modernbert": (tf.ModernBertConfig, tf.ModernBertModel, _wordpiece,
                       dict(max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=4,
                            bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3)),
    }


FAMILY_NAMES = ["bert", "distilbert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta-v2", "modernbert"]


def make_family_teacher(family: str, folder: Path, seed: int = 0, init_range: float = 0.1) -> Path:
    """A random 4-layer encoder of `family` (no head) saved with its tokenizer: a teacher folder."""
    import torch

    config_cls, model_cls, make_tok, extra = _configs()[family]
    torch.manual_seed(seed)
    tokenizer, tok_args = make_tok(folder)
    args = {**SIZE, **tok_args, **extra, "initializer_range": init_range}
    config = config_cls(**{k: v for k, v in args.items() if v is not None})
    assert config.model_type == family
    model_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
