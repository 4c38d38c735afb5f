"""The RuDOLPH hyper-modal transformer: `[left text | image tokens | right text]` in one decoder.

Parameter names and shapes equal the reference `rudolph.model.ruDolphModel`, so official checkpoints load
unchanged. The computation is the reference's, reorganised for speed:

- attention runs through `F.scaled_dot_product_attention` with boolean masks built once per model; the
  reference's PB-relax (subtracting each head's maximum score before the softmax) and its `-10000` masking
  are shifts that the softmax cancels, so they are not repeated here;
- the output layer is evaluated only where it is used (text rows for text positions, image rows for image
  positions) when computing the loss, and only for the newest position while decoding;
- a loss-only forward stops after the last right-text position whose label is not pad: later positions feed
  no loss and, attention being causal, no other position;
- a left text shared by every row of a batch (the empty one of captioning, say) is computed once: the layers run
  on one sequence `[left text | row 1's image and right text | row 2's ...]` whose rows attend to the one left
  text, so the matrix products see `P + B * R` positions instead of `B * (P + R)`;
- incremental decoding keeps keys/values in a preallocated `KVCache`; `KVCache.fork` continues a prompt in many
  rows without copying it, and attention then reads the prompt's keys/values once for all its rows (16 captions of
  one image: the image's keys/values are streamed once per step, not 16 times);
- a plain `nn.Linear` over a few rows (a decoding step) runs as `(W @ x^T)^T` on CPU (`few_rows_linear`), which MKL
  streams ~1.5x faster; `FEW_ROWS_GEMM = 0` turns it off.

Every parameterised layer runs through its module's `forward`, so a wrapper put in its place (a LoRA adapter, 4-bit
weights: `rudolph_ft.lora`) changes the result; the output layer's per-head fast path (`_split_heads`) is taken only
while that layer is a plain `nn.Linear`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import RuDolphConfig
from .masks import build_masks, layer_mask_kind

__all__ = ["RuDolph", "RuDolphOutput", "KVCache", "LOSS_SLICINGS", "register_head_rows_forward"]

LOSS_SLICINGS = ("rc10", "rc4")
Head = Literal["joint", "text", "image"]
HeadRowsForward = Callable[[nn.Module, torch.Tensor, slice], torch.Tensor]
_HEAD_ROWS_FORWARDS: list[tuple[type, HeadRowsForward]] = []


def register_head_rows_forward(kind: type, forward: HeadRowsForward) -> None:
    """Teach the model to compute one head's rows of an output layer of type `kind` (not a plain `nn.Linear`).

    `forward(layer, hidden, rows)` must equal `layer(hidden)[..., rows]`; without one, such a layer computes all its
    rows and the unused ones are dropped (correct, but the image positions then pay for the text rows too).
    """
    _HEAD_ROWS_FORWARDS.append((kind, forward))


def weighted_loss(loss_weights, losses) -> torch.Tensor:
    """The weighted mean of the (left text, image, right text) losses; a zero weight or a missing segment (None)
    leaves its term out, as in the reference."""
    total, weight_sum = 0.0, 0.0
    for weight, loss in zip(loss_weights, losses, strict=True):
        if weight and loss is not None:
            total, weight_sum = total + weight * loss, weight_sum + weight
    return total / weight_sum

@dataclass
class RuDolphOutput:
    """What `RuDolph.forward` returns.

    Attributes:
        logits: (B, T, V) scores; V is the joint vocabulary (text then image) for `head="joint"`,
            else the text or image part. None when only losses were asked for.
        loss: weighted mean of the segment losses, `sum(w_s * L_s) / sum(w_s)` over segments with w_s != 0.
        l_text_loss, image_loss, r_text_loss: the segment cross-entropies (right text ignores pad 0).
        cache: the `KVCache` that was filled, when one was passed.
    """

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    l_text_loss: torch.Tensor | None = None
    image_loss: torch.Tensor | None = None
    r_text_loss: torch.Tensor | None = None
    cache: KVCache | None = None


class KVCache:
    """Preallocated keys/values of every layer for incremental decoding.

    `keys`/`values`: (num_layers, B, heads, max_length, head_dim); positions `[0, length)` are filled.
    """

    def __init__(self, config: RuDolphConfig, batch_size: int, *, device=None, dtype=torch.float32,
                 max_length: int | None = None) -> None:
        head_dim = config.hidden_size // config.num_attention_heads
        shape = (config.num_layers, batch_size, config.num_attention_heads,
                 max_length or config.total_seq_length, head_dim)
        # never read before written (attention reads positions [0, length) only): no need to zero 100s of MB
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.prefix: tuple[torch.Tensor, torch.Tensor, int] | None = None  # set by `fork`

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def index_select(self, batch_indices: torch.Tensor) -> KVCache:
        """A new cache whose batch rows are `batch_indices` of this one (e.g. one prompt -> n samples)."""
        self._check_not_forked()
        new = KVCache.__new__(KVCache)
        new.prefix = None
        batch_indices = batch_indices.to(self.keys.device)
        new.keys = self.keys.index_select(1, batch_indices)
        new.values = self.values.index_select(1, batch_indices)
        new.length = self.length
        return new

    def repeat_interleave(self, repeats: int) -> KVCache:
        return self.index_select(torch.arange(self.batch_size).repeat_interleave(repeats))

    def fork(self, batch_indices: torch.Tensor, max_length: int | None = None) -> KVCache:
        """Like `index_select`, but the filled positions are shared, not copied: the new cache reads this one's
        keys/values `[0, length)` (one copy per source row) and stores only the positions its rows add.

        Attention then reads each shared prefix once for all the rows that continue it (`_SharedLayerKV`):
        16 captions of one image stream the image's keys/values once per step instead of 16 times.
        """
        self._check_not_forked()
        batch_indices = batch_indices.to(self.keys.device)
        rows = len(batch_indices)
        sources, counts = torch.unique_consecutive(batch_indices, return_counts=True)
        if bool((counts == counts[0]).all()):  # image-major rows, each source continued by `group` rows
            group = int(counts[0])
        else:  # any other order: one prefix copy per row (still no copy of the rows' own positions)
            sources, group = batch_indices, 1
        new = KVCache.__new__(KVCache)
        new.length = self.length
        new.prefix = (self.keys[:, sources, :, :self.length], self.values[:, sources, :, :self.length], group)
        layers, _, heads, total, head_dim = self.keys.shape
        shape = (layers, rows, heads, (max_length or total) - self.length, head_dim)
        new.keys = torch.empty(shape, device=self.keys.device, dtype=self.keys.dtype)
        new.values = torch.empty(shape, device=self.keys.device, dtype=self.keys.dtype)
        return new

    def _check_not_forked(self) -> None:
        if self.prefix is not None:
            raise ValueError("this cache was made by `fork`: select or fork rows of the cache it was forked from")

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | _SharedLayerKV:
        """What layer `index`'s attention reads and writes: its (keys, values) buffers, or with a shared prefix
        (`fork`) a `_SharedLayerKV`."""
        if self.prefix is None:
            return self.keys[index], self.values[index]
        keys, values, group = self.prefix
        return _SharedLayerKV(keys[index], values[index], group, self.keys[index], self.values[index])


@dataclass
class _SharedLayerKV:
    """One layer's view of a forked `KVCache`: a prefix shared by groups of rows, then each row's own positions.

    prefix_keys/prefix_values: (G, nh, P, hd), row b continues prefix `b // group`; keys/values: (B, nh, S - P, hd),
    position P + i at index i. B = G * group.
    """

    prefix_keys: torch.Tensor
    prefix_values: torch.Tensor
    group: int
    keys: torch.Tensor
    values: torch.Tensor


# Decoding multiplies a few rows (one position of each sequence) by every weight matrix. MKL streams a weight
# ~1.5x faster computing that as (W @ x^T)^T than as x @ W^T; from ~100 rows on, x @ W^T is faster. 0 turns it off.
FEW_ROWS_GEMM = 64


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, as `(weight @ x^T)^T` on CPU when x has 2..`FEW_ROWS_GEMM` rows (equal up to
    summation order)."""
    rows = x.numel() // max(x.shape[-1], 1)
    if not 2 <= rows <= FEW_ROWS_GEMM or x.device.type != "cpu" or x.dtype != weight.dtype:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1]).t()  # (C_in, rows)
    out = torch.mm(weight, flat) if bias is None else torch.addmm(bias[:, None], weight, flat)  # (C_out, rows)
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


def project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, through `few_rows_linear` when the layer is a plain `nn.Linear` without hooks (a wrapper such
    as a LoRA adapter, or a hook, runs as the module's forward would)."""
    if type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks):
        return few_rows_linear(x, layer.weight, layer.bias)
    return layer(x)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout; on CPU with keep masks drawn 16 bits at a time (`_Dropout16`), elsewhere `F.dropout`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    if round((1.0 - p) * 65536) >= 65536:  # p < 2**-17: below the 16-bit resolution, nothing would drop
        return x
    return _Dropout16.apply(x, p)


class _Dropout16(torch.autograd.Function):
    """CPU dropout drawing four 16-bit uniforms per 64-bit random word: ~4x cheaper than `bernoulli_`.

    The keep probability is quantised to 1/65536 (p = 0.1 keeps 58982/65536, i.e. p = 0.100006) and outputs are
    scaled by the inverse of that exact probability, so the expectation is unchanged. Saves a bool mask.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        threshold = round((1.0 - p) * 65536)  # keep when a uniform 16-bit draw is below this
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) < threshold - 32768
        ctx.scale = 65536.0 / threshold
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


class SelfAttention(nn.Module):
    query_chunk = 64  # queries per block in the CPU training path (`_cpu_dropout_attention`)

    def __init__(self, config: RuDolphConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout_prob = config.attention_dropout_prob
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_dropout_prob = config.output_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0, shared: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, T, C); mask: (T, T_k) or (B, 1, T, T_k) bool, True = attend. `kv`: a cache's key/value buffers,
        x's keys/values are written at `start`. `shared=(P, B)`: x is (1, P + B * R, C), P positions common to B
        rows followed by each row's R others, and mask is (P + R, P + R)."""
        if shared is not None:
            return self._forward_shared(x, mask, *shared)
        query, key, value = self._heads(project(self.query_key_value, x))
        if isinstance(kv, _SharedLayerKV):
            return self._output(self._attend_after_shared_prefix(query, key, value, mask, kv, start))
        if kv is not None:  # write the new keys/values, attend to everything cached so far
            keys, values = kv
            end = start + x.shape[1]
            keys[:, :, start:end], values[:, :, start:end] = key, value
            key, value = keys[:, :, :end], values[:, :, :end]
        return self._output(self._attend(query, key, value, mask))

    def _forward_shared(self, x: torch.Tensor, mask: torch.Tensor, prefix: int, batch: int) -> torch.Tensor:
        qkv = self.query_key_value(x)  # (1, P + B * R, 3C)
        rows = (x.shape[1] - prefix) // batch
        p_query, p_key, p_value = self._heads(qkv[:, :prefix])  # (1, nh, P, hd)
        query, key, value = self._heads(qkv[0, prefix:].view(batch, rows, -1))  # (B, nh, R, hd)
        key = torch.cat([p_key.expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([p_value.expand(batch, -1, -1, -1), value], dim=2)
        context = torch.cat([self._attend(p_query, p_key, p_value, mask[:prefix, :prefix]),
                             self._attend(query, key, value, mask[prefix:]).view(1, batch * rows, -1)], dim=1)
        return self._output(context)

    def _attend_after_shared_prefix(self, query, key, value, mask, kv: _SharedLayerKV, start: int) -> torch.Tensor:
        """Attention of queries (B, nh, T, hd) at positions `start...` over a shared prefix and each row's own
        positions (`KVCache.fork`); x's keys/values are written first. One softmax over both parts, as if the
        keys were concatenated, but each prefix is read once for its `group` rows: their queries form one matrix.
        """
        prefix = kv.prefix_keys.shape[2]
        end = start + query.shape[2]
        kv.keys[:, :, start - prefix:end - prefix], kv.values[:, :, start - prefix:end - prefix] = key, value
        own_keys, own_values = kv.keys[:, :, :end - prefix], kv.values[:, :, :end - prefix]
        batch, heads, length, head_dim = query.shape
        groups = batch // kv.group

        def grouped(t: torch.Tensor) -> torch.Tensor:  # (B, nh, T, k) <-> (G, nh, group * T, k)
            return t.view(groups, kv.group, heads, length, -1).transpose(1, 2).reshape(groups, heads, -1, t.shape[-1])

        def ungrouped(t: torch.Tensor) -> torch.Tensor:
            return t.view(groups, heads, kv.group, length, -1).transpose(1, 2).reshape(batch, heads, length, -1)

        scale = 1.0 / math.sqrt(head_dim)
        # (keys @ queries^T)^T: the few-rows orientation again (`few_rows_linear`), ~2x faster than queries @ keys^T
        prefix_scores = (kv.prefix_keys @ grouped(query).transpose(2, 3)).transpose(2, 3)  # (G, nh, group * T, P)
        scores = torch.cat([ungrouped(prefix_scores),  # (B, nh, T, P)
                            query @ own_keys.transpose(2, 3)], dim=-1).mul_(scale)  # (B, nh, T, end)
        probs = scores.masked_fill_(~mask, float("-inf")).softmax(dim=-1)
        context = ungrouped(grouped(probs[..., :prefix].contiguous()) @ kv.prefix_values)
        context = context + probs[..., prefix:] @ own_values  # (B, nh, T, hd)
        return context.transpose(1, 2).reshape(batch, length, heads * head_dim)

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, 3C) -> query, key, value, each (B, nh, T, hd)."""
        batch, length = qkv.shape[:2]
        return qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def _attend(self, query, key, value, mask) -> torch.Tensor:
        """Attention context (B, T, C) of queries (B, nh, T, hd) over keys/values (B, nh, T_k, hd)."""
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.training and self.dropout_prob > 0 and query.device.type == "cpu":
            # CPU SDPA runs its unfused math path when dropout is on; this one fuses scale and mask into one
            # baddbmm and draws the dropout mask cheaply
            context = self._cpu_dropout_attention(query, key, value, mask, scale)
        else:
            dropout_p = self.dropout_prob if self.training else 0.0
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p,
                                                     scale=scale)
        batch, heads, length, head_dim = context.shape
        return context.transpose(1, 2).reshape(batch, length, heads * head_dim)

    def _output(self, context: torch.Tensor) -> torch.Tensor:
        output = project(self.dense, context).clamp(-65504, 65504)  # the reference clamps to the fp16 range
        return dropout(output, self.output_dropout_prob, self.training)

    def _cpu_dropout_attention(self, query, key, value, mask, scale) -> torch.Tensor:
        """Attention with dropout on the probabilities, `query_chunk` queries at a time. The queries are the last
        positions of the keys and every mask is causal, so a block of queries needs only the keys up to its own
        last position: ~1/3 fewer products at RuDOLPH's lengths, and each block's scores stay in cache."""
        batch, heads, length, head_dim = query.shape
        keys = key.shape[2]
        offset = keys - length  # absolute position of the first query
        bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~mask, float("-inf"))
        bias = bias.reshape(-1, length, keys) if bias.dim() == 4 else bias  # (B, 1, T, T_k) -> (B, T, T_k)
        if bias.dim() == 3 and bias.shape[0] != batch * heads:
            bias = bias.repeat_interleave(heads, dim=0)
        query = query.reshape(-1, length, head_dim)  # (B*nh, T, hd)
        key, value = key.reshape(-1, keys, head_dim), value.reshape(-1, keys, head_dim)
        blocks, chunk = [], self.query_chunk
        for start in range(0, length, chunk):
            end = min(start + chunk, length)
            seen = offset + end  # keys [0, seen) are all this block can attend to
            scores = torch.baddbmm(bias[..., start:end, :seen], query[:, start:end],
                                   key[:, :seen].transpose(1, 2), alpha=scale)  # (B*nh, block, seen)
            probs = dropout(torch.softmax(scores, dim=-1), self.dropout_prob, True)
            blocks.append(torch.bmm(probs, value[:, :seen]))
        context = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return context.view(batch, heads, length, head_dim)


class MLP(nn.Module):
    def __init__(self, config: RuDolphConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * config.hidden_size, config.hidden_size)
        self.dropout_prob = config.output_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the reference's "OpenAI gelu" is the tanh approximation
        x = project(self.dense_4h_to_h, F.gelu(project(self.dense_h_to_4h, x), approximate="tanh"))
        return dropout(x, self.dropout_prob, self.training)


class TransformerLayer(nn.Module):
    """Pre-norm block with CogView's sandwich layer norms on both branch outputs."""

    def __init__(self, config: RuDolphConfig) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.layernorm_epsilon
        self.sandwich = config.cogview_sandwich_layernorm
        self.input_layernorm = nn.LayerNorm(hidden, eps=eps)
        if self.sandwich:
            self.before_first_addition_layernorm = nn.LayerNorm(hidden, eps=eps)
            self.before_second_addition_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.attention = SelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv=None, start: int = 0, shared=None) -> torch.Tensor:
        """See `SelfAttention.forward`; every other part works on each position alone."""
        attention = self.attention(self.input_layernorm(x), mask, kv, start, shared)
        if self.sandwich:
            attention = self.before_first_addition_layernorm(attention)
        x = x + attention
        mlp = self.mlp(self.post_attention_layernorm(x))
        if self.sandwich:
            mlp = self.before_second_addition_layernorm(mlp)
        return x + mlp


class Transformer(nn.Module):
    """The layer stack (reference `SparseTransformer`; its mask buffers are rebuilt here, not stored)."""

    def __init__(self, config: RuDolphConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mask_kinds = [layer_mask_kind(i, config.num_layers) for i in range(config.num_layers)]
        # (4, S, S) bool, True = may attend; moves with the model, never saved in our checkpoints
        self.register_buffer("masks", build_masks(config, device=self.final_layernorm.weight.device),
                             persistent=False)


class RuDolph(nn.Module):
    """RuDOLPH: left text, image tokens and right text in one causal transformer with sparse image attention.

    Example:
        >>> model = RuDolph(RuDolphConfig.from_preset("tiny"))
        >>> ids = torch.zeros(2, model.config.total_seq_length, dtype=torch.long)
        >>> model(ids).logits.shape  # (B, T, text vocab + image vocab)
        >>> out = model(ids, loss_weights=(0.01, 1, 7))  # out.loss, out.l_text_loss, out.image_loss, ...
    """

    def __init__(self, config: RuDolphConfig) -> None:
        super().__init__()
        self.config = config
        hidden, per_dim = config.hidden_size, config.image_tokens_per_dim
        self.text_embeddings = nn.Embedding(config.text_vocab_size, hidden)
        self.image_embeddings = nn.Embedding(config.image_vocab_total, hidden)
        self.l_text_pos_embeddings = nn.Embedding(config.l_text_seq_length + 1, hidden)
        self.r_text_pos_embeddings = nn.Embedding(config.r_text_seq_length + 1, hidden)
        self.image_row_embeddings = nn.Embedding(per_dim, hidden)
        self.image_col_embeddings = nn.Embedding(per_dim, hidden)
        self.to_logits = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, config.total_vocab_size))
        self.transformer = Transformer(config)
        # a 0 (pad) at left position i is replaced by the special token `text_vocab_size - l_text_seq_length + i`
        self.register_buffer("l_text_special_ids", self._l_text_special_ids(), persistent=False)
        self.gradient_checkpointing = config.gradient_checkpointing
        # a left text equal in every row of a batch is computed once (e.g. the empty one of captioning); in
        # training its dropout masks are then shared by the rows too. False computes it per row.
        self.share_prefix = True
        self.apply(self._init_weights)

    def _l_text_special_ids(self, device=None) -> torch.Tensor:
        cfg = self.config
        return torch.arange(cfg.l_text_seq_length, device=device) + cfg.text_vocab_size - cfg.l_text_seq_length

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Rebuild the non-persistent buffers (after `to_empty`, e.g. when weights were loaded onto meta)."""
        self.transformer.masks = build_masks(self.config, device=device)
        self.l_text_special_ids = self._l_text_special_ids(device)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def gradient_checkpointing_enable(self) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        loss_weights: tuple[float, float, float] | None = None,
        loss_slicing: str = "rc10",
        return_logits: bool | None = None,
        head: Head = "joint",
        last_only: bool = False,
    ) -> RuDolphOutput:
        """Run the model on token ids laid out as `[left text | image | right text]`.

        Args:
            input_ids: (B, T) ids. Text ids index the text vocabulary, image ids the image vocabulary (each
                from 0). Without `cache` the ids start at position 0; with it, at position `cache.length`.
            attention_mask: optional extra mask, multiplied with the layer masks like the reference's:
                (B, T_total) key padding or (B, 1, S, S) / (B, S, S), nonzero = may attend. Rows left with
                nothing to attend to attend to themselves, so outputs stay finite.
            cache: a `KVCache` to read past keys/values from and write the new ones into.
            loss_weights: (left text, image, right text) weights; when given, the output carries the weighted
                loss and the three segment losses (T must end at a segment boundary, no cache).
            loss_slicing: "rc10" (default) or "rc4": rc4 also scores the last image position against the first
                right-text token (its image labels are shifted by one); everything else is equal.
            return_logits: default True without `loss_weights`, False with them (saves the output layer).
            head: "joint" (text then image vocabulary), "text" or "image" part of the output layer.
            last_only: logits for the last position only (decoding).
        """
        start = cache.length if cache is not None else 0
        self._check_input(input_ids, start, validate_ids=cache is None or start == 0)
        want_logits = return_logits or (return_logits is None and loss_weights is None)
        if loss_weights is not None and cache is not None:
            raise ValueError("loss_weights cannot be combined with a KV cache")
        ids = input_ids if want_logits or loss_weights is None else input_ids[:, :self._scored_length(input_ids)]
        shared = self._shared_prefix_length(ids, start, attention_mask, cache)
        hidden = self._embed(ids, start)
        if shared:  # one row of the common left text, then every row's other positions, as one sequence
            hidden = torch.cat([hidden[:1, :shared], hidden[:, shared:].flatten(0, 1)[None]], dim=1)
            hidden = self._run_layers(hidden, 0, None, None, (shared, ids.shape[0]))
        else:
            hidden = self._run_layers(hidden, start, attention_mask, cache)
        hidden = self.to_logits[0](self.transformer.final_layernorm(hidden))  # (B, T, C)
        output = RuDolphOutput(cache=cache)
        if loss_weights is not None:
            self._segment_losses(output, hidden, input_ids, loss_weights, loss_slicing)
        if want_logits:
            output.logits = self._logits(hidden[:, -1:] if last_only else hidden, head)
        return output

    def _scored_length(self, input_ids: torch.Tensor) -> int:
        """How many positions a loss-only forward computes: right-text positions after the last one whose label
        (the next token) is not pad feed no loss and, attention being causal, no other position."""
        cfg = self.config
        image_end = cfg.l_text_seq_length + cfg.image_seq_length
        if input_ids.shape[1] != cfg.total_seq_length:
            return input_ids.shape[1]
        scored = (input_ids[:, image_end + 1:] != 0).any(dim=0).nonzero()  # right-text labels 1.. that count
        return image_end + (int(scored.max()) + 1 if scored.numel() else 1)

    def _shared_prefix_length(self, ids: torch.Tensor, start: int, attention_mask, cache) -> int:
        """The left text's length when every row has the same left text (it is then computed once and attended
        by all rows: in eval exactly as if repeated, in training with one dropout mask for all rows), else 0."""
        l_len = self.config.l_text_seq_length
        if (not self.share_prefix or cache is not None or attention_mask is not None or start != 0
                or ids.shape[0] < 2 or ids.shape[1] <= l_len):
            return 0
        left = ids[:, :l_len]
        return l_len if bool((left == left[:1]).all()) else 0

    def _check_input(self, input_ids: torch.Tensor, start: int, validate_ids: bool) -> None:
        cfg = self.config
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"input_ids must be a (batch, length) integer tensor, got {tuple(input_ids.shape)} "
                             f"{input_ids.dtype}")
        end = start + input_ids.shape[1]
        if end > cfg.total_seq_length:
            raise ValueError(f"sequence of {end} tokens is longer than the model's {cfg.total_seq_length} "
                             f"(left text {cfg.l_text_seq_length} + image {cfg.image_seq_length} + right text "
                             f"{cfg.r_text_seq_length})")
        if not validate_ids or input_ids.numel() == 0:
            return
        image_start, image_end = cfg.l_text_seq_length, cfg.l_text_seq_length + cfg.image_seq_length
        segments = (("left text", 0, image_start, cfg.text_vocab_size),
                    ("image", image_start, image_end, cfg.image_vocab_total),
                    ("right text", image_end, cfg.total_seq_length, cfg.text_vocab_size))
        for name, seg_start, seg_end, vocab in segments:
            part = input_ids[:, max(seg_start - start, 0):max(seg_end - start, 0)]
            if part.numel() and (part.min() < 0 or part.max() >= vocab):
                bad = int(part.max()) if part.max() >= vocab else int(part.min())
                raise ValueError(f"{name} token id {bad} is outside its vocabulary [0, {vocab}): image codes must "
                                 f"come from a VQGAN with {cfg.image_vocab_size} codes, text ids from the "
                                 f"model's tokenizer")

    def _embed(self, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        cfg = self.config
        image_start, image_end = cfg.l_text_seq_length, cfg.l_text_seq_length + cfg.image_seq_length
        end = start + input_ids.shape[1]
        l_end, r_start = max(min(end, image_start), start), max(start, image_end)
        # left text (pads replaced by per-position special tokens) and right text: one lookup, one dense gradient
        left = input_ids[:, : l_end - start]
        left = torch.where(left == 0, self.l_text_special_ids[start:l_end], left)
        right = input_ids[:, min(r_start, end) - start:]
        left, right = self.text_embeddings(torch.cat([left, right], dim=1)).split([left.shape[1], right.shape[1]], 1)
        parts = [left + self.l_text_pos_embeddings.weight[start:l_end]]
        lo, hi = max(start, image_start), min(end, image_end)
        if hi > lo:  # image: codebook embedding + row and column position embeddings
            pixel = torch.arange(lo - image_start, hi - image_start, device=input_ids.device)
            position = self.image_row_embeddings(pixel // cfg.image_tokens_per_dim)
            position = position + self.image_col_embeddings(pixel % cfg.image_tokens_per_dim)
            parts.append(self.image_embeddings(input_ids[:, lo - start: hi - start]) + position)
        parts.append(right + self.r_text_pos_embeddings.weight[r_start - image_end: max(end - image_end, 0)])
        embeddings = torch.cat([part for part in parts if part.shape[1]], dim=1)  # (B, T, C)
        # the reference scales the embeddings' gradient by 0.1 this way (the value is unchanged)
        return embeddings * 0.1 + embeddings.detach() * 0.9

    def _layer_masks(self, start: int, end: int, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        masks = self.transformer.masks[:, start:end, :end]  # (4, T, T_k)
        if attention_mask is None:
            return list(masks)
        extra = attention_mask.to(device=masks.device) != 0
        if extra.dim() == 2:  # (B, T_total) key padding
            extra = extra[:, None, None, :end]
        else:  # (B, S, S) or (B, 1, S, S)
            extra = (extra if extra.dim() == 4 else extra[:, None])[:, :, start:end, :end]
        combined = masks[:, None, None] & extra  # (4, B, 1, T, T_k)
        own = torch.arange(start, end, device=masks.device)[:, None] == torch.arange(end, device=masks.device)
        empty_rows = ~combined.any(dim=-1, keepdim=True)
        return list(combined | (empty_rows & own))

    def _run_layers(self, hidden, start, attention_mask, cache, shared: tuple[int, int] | None = None):
        """The layer stack on `hidden` (B, T, C) at positions `start...`. With `shared=(P, B)`, `hidden` is
        (1, P + B * R, C) (see `SelfAttention.forward`) and the result is unfolded to (B, P + R, C)."""
        length = hidden.shape[1] if shared is None else shared[0] + (hidden.shape[1] - shared[0]) // shared[1]
        masks = self._layer_masks(start, start + length, attention_mask)
        use_checkpoint = self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for i, layer in enumerate(self.transformer.layers):
            mask = masks[self.transformer.mask_kinds[i]]
            if cache is not None:
                hidden = layer(hidden, mask, cache.layer(i), start)
            elif use_checkpoint:
                hidden = checkpoint(layer, hidden, mask, None, 0, shared, use_reentrant=False)
            else:
                hidden = layer(hidden, mask, None, 0, shared)
        if cache is not None:
            cache.length = start + hidden.shape[1]
        if shared is None:
            return hidden
        prefix, batch = shared
        rest = hidden[0, prefix:].view(batch, length - prefix, -1)
        return torch.cat([hidden[:, :prefix].expand(batch, -1, -1), rest], dim=1)

    def _split_heads(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The output layer's text and image parts (weight, bias). One split serves both: its backward is one
        concatenation, where slicing (or a split per head) adds a zero-filled full-size gradient per use."""
        linear, text = self.to_logits[1], self.config.text_vocab_size
        sizes = [text, linear.weight.shape[0] - text]
        weights, biases = linear.weight.split(sizes), linear.bias.split(sizes)
        return {"text": (weights[0], biases[0]), "image": (weights[1], biases[1])}

    def _head_forward(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """`(hidden, "text" | "image") -> that head's logits`. A plain `nn.Linear` is split once (`_split_heads`);
        any other output layer (a LoRA wrapper, 4-bit weights) runs through its forward, since reading its weights
        directly would silently skip what the wrapper adds."""
        linear = self.to_logits[1]
        if type(linear) is nn.Linear:
            heads = self._split_heads()
            return lambda hidden, head: few_rows_linear(hidden, *heads[head])
        text = self.config.text_vocab_size
        rows = {"text": slice(0, text), "image": slice(text, self.config.total_vocab_size)}
        for kind, forward in _HEAD_ROWS_FORWARDS:
            if isinstance(linear, kind):
                return lambda hidden, head: forward(linear, hidden, rows[head])
        return lambda hidden, head: linear(hidden)[..., rows[head]]

    def _logits(self, hidden: torch.Tensor, head: Head) -> torch.Tensor:
        linear = self.to_logits[1]
        if head == "joint":
            return linear(hidden)
        if head not in ("text", "image"):
            raise ValueError(f"head must be 'joint', 'text' or 'image', got {head!r}")
        return self._head_forward()(hidden, head)

    def _segment_losses(self, output, hidden, input_ids, loss_weights, loss_slicing) -> None:
        """The reference's three losses; each segment's logits are computed only where they are scored."""
        cfg = self.config
        if loss_slicing not in LOSS_SLICINGS:
            raise ValueError(f"loss_slicing must be one of {LOSS_SLICINGS}, got {loss_slicing!r}")
        l_len, length = cfg.l_text_seq_length, input_ids.shape[1]
        image_end = l_len + cfg.image_seq_length
        if length not in (l_len, image_end, cfg.total_seq_length):
            raise ValueError(f"the loss needs whole segments: length {l_len}, {image_end} or {cfg.total_seq_length}, "
                             f"got {length}")
        use_image, use_r_text = length > l_len, length > image_end
        if loss_slicing == "rc4" and not use_r_text:
            raise ValueError("rc4 loss slicing needs the right text (its image labels include its first token)")
        if use_image and cfg.image_vocab_total > cfg.text_vocab_size:
            raise ValueError(f"the reference's left-text loss scores the first image code with the text head, so "
                             f"it needs text vocabulary ({cfg.text_vocab_size}) >= image vocabulary "
                             f"({cfg.image_vocab_total}); true for every official preset")
        l_text = torch.where(input_ids[:, :l_len] == 0, self.l_text_special_ids, input_ids[:, :l_len])
        image_ids, r_text = input_ids[:, l_len:image_end], input_ids[:, image_end:]

        # left and right text share one pass through the text head: (B, n_left + n_right, V_text)
        left_labels = torch.cat([l_text[:, 1:], image_ids[:, :1]], dim=1) if use_image else l_text[:, 1:]
        n_left = left_labels.shape[1]
        text_hidden, text_labels = hidden[:, :n_left], left_labels
        if use_r_text:  # `hidden` may stop early: the right-text labels past it are all pad (`_scored_length`)
            n_right = min(hidden.shape[1], length - 1) - image_end
            right_labels = r_text[:, 1:1 + n_right]
            text_hidden = torch.cat([text_hidden, hidden[:, image_end:image_end + n_right]], dim=1)
            text_labels = torch.cat([left_labels, right_labels.masked_fill(right_labels == 0, -100)], dim=1)
        head_logits = self._head_forward()
        token_losses = F.cross_entropy(head_logits(text_hidden, "text").float().flatten(0, 1),
                                       text_labels.flatten(), reduction="none").view_as(text_labels)
        output.l_text_loss = token_losses[:, :n_left].mean()
        if use_r_text:  # mean over the non-pad tokens of the batch, as cross_entropy(ignore_index=0) takes it
            scored = text_labels[:, n_left:] != -100
            output.r_text_loss = token_losses[:, n_left:].sum() / scored.sum()
        if use_image:
            image_labels = image_ids[:, 1:]
            if loss_slicing == "rc4":  # rc4 scores the last image position against the first right-text token
                image_labels = torch.cat([image_labels, r_text[:, :1]], dim=1)
            image_logits = head_logits(hidden[:, l_len: l_len + image_labels.shape[1]], "image")
            output.image_loss = F.cross_entropy(image_logits.float().flatten(0, 1), image_labels.flatten())
        output.loss = weighted_loss(loss_weights, (output.l_text_loss, output.image_loss, output.r_text_loss))
