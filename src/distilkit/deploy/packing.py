"""Packed model calls: several texts share each row, and each text attends only to itself.

A padded call runs every text at the length of the longest one, so a server batch of 32 texts that arrived in any
order (5 to 55 tokens on SST-2) spends a third of its work on padding. A packed call puts texts end to end in rows
of `ROW_TOKENS` tokens (first fit, longest first), gives each token its position within its own text, and builds a
block-diagonal attention mask in the graph from `text_index` (which text of the call each token belongs to; -1 for
padding). The classifier head then runs on each text's first token, gathered by `first_token`.

    graph inputs   input_ids, position_ids, text_index (rows, tokens); token_type_ids when the model takes them;
                   first_token (texts,): row * tokens + column of each text's first token
    graph output   logits (texts, labels); for an embedding model, each text's mean or CLS pooled token states

The outputs equal the padded model's: export checks this on the torch model before writing the packed graph, and a
family whose model does not take such a mask keeps the padded graph (export.json says why). Packed: BERT, DistilBERT,
RoBERTa, XLM-R, ELECTRA, MPNet (tests/test_packing.py); padded: DeBERTa-v2 (its embeddings are multiplied by a 2-d
mask) and ModernBERT (it builds its own masks). Embedding models with mean or CLS pooling pack too (the graph pools,
normalisation runs after it); max pooling keeps the padded graph. OpenVINO runs the packed graph; ONNX Runtime keeps
the padded one, which its fusions know.
The same idea as packed sequences in pre-training (Krell et al. 2021, "Efficient sequence packing without
cross-contamination"); here it is used at inference.
"""

from __future__ import annotations

import numpy as np

ROW_TOKENS = 64  # SST-2, 3 x 384 int8 student, batches of 32 texts in arrival order: 64 → 3,100-3,230 texts/s,
# 48 → 2,675, 128 → 2,888, padded calls of 8 → 1,858-1,950 (docs/experiments.md)
MAX_ROWS = 16  # rows per model call: bounds the input shapes a server warms up
PACKED_INPUTS = ("text_index", "first_token")  # inputs a packed graph has and a padded one has not


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple`."""
    return -(-n // multiple) * multiple


def pack_rows(lengths, capacity: int) -> list[list[int]]:
    """Text indices per row: first fit in order of decreasing length, at most `capacity` tokens a row (a longer
    text gets a row of its own)."""
    rows, fill = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = int(lengths[i])
        row = next((r for r in range(len(rows)) if fill[r] + n <= capacity), None)
        if row is None:
            rows.append([i])
            fill.append(n)
        else:
            rows[row].append(i)
            fill[row] += n
    return rows


def packed_calls(enc: dict[str, np.ndarray], pad_id: int, multiple: int = 16, row_tokens: int = ROW_TOKENS,
                 max_rows: int = MAX_ROWS) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Padded encodings (input_ids, attention_mask and maybe token_type_ids: (texts, tokens)) as packed model calls:
    (the texts' indices, the call's inputs) each, at most `max_rows` rows of a multiple of `multiple` tokens.
    A row holds max(row_tokens, the longest text) tokens."""
    if len(enc["input_ids"]) == 1:
        return [(np.zeros(1, np.int64), packed_text(enc, pad_id, multiple))]
    mask = enc["attention_mask"].astype(bool)
    lengths = mask.sum(1)
    tokens = [np.flatnonzero(m) for m in mask]  # each text's real tokens (right or left padding)
    capacity = max(row_tokens, int(lengths.max()))
    rows = pack_rows(lengths, capacity)
    calls = []
    for start in range(0, len(rows), max_rows):
        chunk = rows[start:start + max_rows]
        width = round_up(max(int(lengths[r].sum()) for r in chunk), multiple)
        shape = (len(chunk), width)
        feed = {"input_ids": np.full(shape, pad_id, np.int64), "position_ids": np.zeros(shape, np.int64),
                "text_index": np.full(shape, -1, np.int64)}
        if "token_type_ids" in enc:
            feed["token_type_ids"] = np.zeros(shape, np.int64)
        order = [i for row in chunk for i in row]
        first = np.zeros(len(order), np.int64)
        k = 0
        for r, row in enumerate(chunk):
            at = 0
            for i in row:
                n, src = len(tokens[i]), tokens[i]
                feed["input_ids"][r, at:at + n] = enc["input_ids"][i, src]
                if "token_type_ids" in enc:
                    feed["token_type_ids"][r, at:at + n] = enc["token_type_ids"][i, src]
                feed["position_ids"][r, at:at + n] = np.arange(n)
                feed["text_index"][r, at:at + n] = k
                first[k] = r * width + at
                at, k = at + n, k + 1
        feed["first_token"] = first
        calls.append((np.array(order, dtype=np.int64), feed))
    return calls


def packed_text(enc: dict[str, np.ndarray], pad_id: int, multiple: int) -> dict[str, np.ndarray]:
    """The packed inputs of a call of one text: what packed_calls builds for it, in a few array operations (each
    operation costs more between model calls than in a loop of its own: the general path made a lone text's call
    0.1 ms slower, 1.35 against 1.26 ms, on the 3 x 256 int8 student at 128 tokens)."""
    real = enc["attention_mask"][0] > 0
    n = int(real.sum())
    width = round_up(n, multiple)
    feed = {"input_ids": np.full((1, width), pad_id, np.int64), "position_ids": np.arange(width, dtype=np.int64)[None],
            "text_index": np.zeros((1, width), np.int64), "first_token": np.zeros(1, np.int64)}
    feed["input_ids"][0, :n] = enc["input_ids"][0][real]
    feed["position_ids"][0, n:] = 0
    feed["text_index"][0, n:] = -1
    if "token_type_ids" in enc:
        feed["token_type_ids"] = np.zeros((1, width), np.int64)
        feed["token_type_ids"][0, :n] = enc["token_type_ids"][0][real]
    return feed


PACKED_POOLING = ("mean", "cls")  # embedding poolings a packed graph computes (max pooling keeps the padded graph)


def packed_model(model, names: list[str], pooling: str | None = None):
    """`model` as a torch module taking packed inputs, positionally in the order of `names` (see the module
    docstring). A sequence classifier (`pooling` None) outputs logits per text, its head reading each text's first
    token; a bare encoder outputs each text's token states pooled by `pooling` (one of PACKED_POOLING; L2
    normalisation is left to the caller). Position ids count from the model's own first position (RoBERTa-style
    embeddings start after the padding index)."""
    import torch

    embeddings = getattr(model.base_model, "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    offset = padding_idx + 1 if padding_idx is not None else 0

    def classify(inputs, mask, first):
        def gather(module, _args, output):  # the head sees each text's first token as a text of length 1
            states = output.last_hidden_state
            output.last_hidden_state = states.reshape(-1, states.shape[-1])[first][:, None, :]
            if getattr(output, "pooler_output", None) is not None and getattr(module, "pooler", None) is not None:
                output.pooler_output = module.pooler(output.last_hidden_state)
            return output

        hook = model.base_model.register_forward_hook(gather)
        try:
            return model(attention_mask=mask, **inputs).logits
        finally:
            hook.remove()

    def embed(inputs, mask, index, first):
        states = model(attention_mask=mask, **inputs).last_hidden_state
        states = states.reshape(-1, states.shape[-1])  # (rows * tokens, hidden)
        if pooling == "cls":
            return states[first]
        texts = torch.cumsum(torch.ones_like(first), 0) - 1  # 0 .. texts - 1, an arange whose length stays dynamic
        weights = (index.reshape(1, -1) == texts[:, None]).to(states.dtype)  # (texts, rows * tokens)
        return weights @ states / weights.sum(1, keepdim=True)

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            inputs = dict(zip(names, args))
            index, first = inputs.pop("text_index"), inputs.pop("first_token")
            same = index[:, :, None] == index[:, None, :]  # (rows, tokens, tokens): a token sees its own text
            mask = torch.where(same, 0.0, torch.finfo(torch.float32).min)[:, None]  # transformers' custom 4-d mask
            inputs["position_ids"] = inputs["position_ids"] + offset
            return classify(inputs, mask, first) if pooling is None else embed(inputs, mask, index, first)

    return Packed().eval()
