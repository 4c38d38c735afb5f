"""A training run's memory, planned before anything is allocated: `rudolph-ft plan CONFIG`.

The parameters are counted on a model built on the meta device (no memory, no weights read), with the run's freeze
applied, so trainable / frozen counts are exact. Bytes follow from them and from RuDOLPH's forward as the trainer runs
it (`Trainer._optimizer_step`):

- weights are fp32 whatever the precision (accelerate autocasts; it never stores low-precision weights);
  gradients fp32 per trainable parameter; optimizer states 8 bytes per trainable parameter for AdamW, and for
  bitsandbytes Adam8bit 2 bytes plus two fp32 block scales per 256 elements (tensors under 4096 elements keep
  32-bit states, as bitsandbytes does);
- activations: what autograd saves for the backward pass, tensor by tensor from `rudolph.py` (`_layer_saved`):
  a loss-only forward runs S - 1 positions (the last one feeds no loss), a batch's common empty left text runs
  once (`shared_prefix`), a frozen Linear keeps no input (autograd saves only what a wanted gradient needs),
  attention keeps its scores only on the CPU's dropout path (CUDA's fused kernels keep a log-sum-exp per row),
  and the joint head keeps fp32 log-probabilities of both segments' vocabularies for the loss. With gradient
  checkpointing only each layer's input is kept, plus one layer recomputed during the backward pass;
- under bf16 / fp16 autocast matrix products keep low-precision copies of their inputs, layer norms (on CUDA) fp32
  ones; outside FSDP also of the weights: a frozen weight's copy is saved for the input's gradient, a trainable
  one's is cached by autocast for the whole step (FSDP gathers bf16 weights instead, counted as in flight).

finetune.method lora / qlora (`rudolph_ft.lora`) adds r x (in + out) adapter parameters per targeted linear (counted
exactly: `target_modules` on the meta model), trainable beside the freeze roles; the base is frozen, fp32 (lora)
or, for the quantized linears (qlora), NF4: half a byte per weight plus bitsandbytes' double-quantized block scales
(`_nf4_bytes`). Gradients and optimizer states exist only for trainable tensors. An adapter saves its dropout mask
(bool), its dropped input for A and A x for B; a frozen base linear
saves no input (its backward needs only the weight: a bf16 copy under autocast, none for NF4, which is dequantized
in the backward pass, a layer transient). The first layer's input norm saves nothing when nothing below it trains.

The peak follows a step's timeline: the start of the backward pass (all activations, the loss's gradients, the
output layer's gradient made in two parts and concatenated), each layer's backward (gradients of the layers above
accumulated) and the optimizer step (every gradient plus the optimizer's temporaries). DDP adds its gradient
buckets (a second copy of the gradients, for N > 1 processes); FSDP (`fully_shard` per transformer layer and on
the root) divides weights, gradients and optimizer states by N and adds the gathered parameters of the root and of
~2 layers in flight (bf16 copies under bf16), the root's gradients and one layer's, unsharded. The estimate is
checked against measured CPU peaks (`benchmarks/bench_memory.py`; LoRA / QLoRA: `benchmarks/bench_peft.py`) and,
exactly, against the bytes autograd saves (`tests/test_plan.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import MODEL_PRESETS, RuDolphConfig
from .config import ConfigError, TrainConfig

__all__ = ["GPU_COUNTS", "STRATEGIES", "LayerMemory", "MemoryPlan", "memory_plan", "model_config", "format_plan",
           "peak_line", "optimizer_state_bytes"]

GPU_COUNTS = (1, 2, 4, 8)
STRATEGIES = ("ddp", "fsdp")
Device = Literal["cuda", "cpu"]
GIB = 2**30
_BNB_BLOCK, _BNB_MIN_8BIT = 256, 4096  # bitsandbytes' blockwise 8-bit states: block size, smallest 8-bit tensor
_CPU_QUERY_CHUNK = 64  # SelfAttention.query_chunk: queries per block of the CPU dropout path
_LINEARS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
# bitsandbytes Linear4bit (Params4bit defaults): NF4 blocks of 64 weights, compress_statistics=True: each block's
# absmax quantized to 8 bits in blocks of 256 (one fp32 scale each, and the 256-entry 8-bit code), plus an fp32
# offset and the 16-entry NF4 code
_NF4_BLOCK, _NF4_NESTED_BLOCK, _NF4_CODE = 64, 256, 16


@dataclass(frozen=True)
class LayerMemory:
    """One transformer layer. `saved`: bytes autograd keeps for its backward (input included); `input`: bytes of
    its input, all a checkpointed layer keeps; `params` / `trainable`: elements. Outside FSDP, under autocast:
    `saved_casts`, low-precision copies of frozen weights saved for the input's gradient (recomputed with the
    layer under checkpointing), and `held_casts`, those of trainable weights, which autocast caches for the step.
    FSDP gathers bf16 weights instead (`MemoryPlan.breakdown`'s in_flight)."""

    saved: int
    input: int
    params: int
    trainable: int
    saved_casts: int = 0
    held_casts: int = 0

    def saved_bytes(self, fsdp: bool) -> int:
        return self.saved + (0 if fsdp else self.saved_casts)


@dataclass(frozen=True)
class MemoryPlan:
    """The memory of one training process, as `memory_plan` estimates it; `peak(N, strategy)` per device.

    Byte fields are for one unsharded replica: `activation_bytes` is what the step holds at the start of its
    backward pass (saved tensors of every layer and of the loss, plus autocast's weight copies outside FSDP).
    """

    model: str
    batch_size: int
    seq_length: int  # l_text + image tokens + r_text
    positions: int  # positions the layers run per step (S - 1 per row; a shared left text once)
    precision: str
    gradient_checkpointing: bool
    optimizer: str
    device: str
    trainable_params: int
    frozen_params: int
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    layers: tuple[LayerMemory, ...] = field(repr=False)
    head_saved: int = 0  # final norms, the head's inputs and the fp32 log-probabilities the loss keeps
    head_casts: int = 0  # low-precision copies of the output layer's weight kept for its backward (autocast)
    head_transient: int = 0  # the loss's forward / backward temporaries (logits, their gradients)
    layer_transient: int = 0  # a layer's backward temporaries (gradients of its 4h-wide activations)
    optimizer_transient: int = 0  # temporaries of `optimizer.step()`
    head_grad_bytes: int = 0  # gradients written first in the backward pass (output layer, final norms)
    embedding_grad_bytes: int = 0  # written last
    root_params: int = 0  # parameters outside the layers (embeddings, head): FSDP's root group
    param_bytes_in_flight: int = 4  # bytes per gathered parameter under FSDP (2 under bf16 / fp16)
    method: str = "full"  # finetune.method: full | lora | qlora
    adapter_params: int = 0  # LoRA adapter elements (all trainable, part of trainable_params)
    quantized_params: int = 0  # base weight elements stored in NF4 (qlora; part of frozen_params)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.frozen_params

    @property
    def activation_bytes(self) -> int:
        return self._activations(fsdp=False)

    def _kept(self, fsdp: bool) -> list[int]:
        """Bytes each layer keeps from its forward to its backward."""
        return [layer.input if self.gradient_checkpointing else layer.saved_bytes(fsdp) for layer in self.layers]

    def _activations(self, fsdp: bool) -> int:
        kept = sum(self._kept(fsdp))
        casts = 0 if fsdp else self.head_casts + sum(layer.held_casts for layer in self.layers)
        return kept + self.head_saved + casts

    def breakdown(self, num_processes: int = 1, strategy: str = "ddp") -> dict[str, int]:
        """Bytes per device: weights, gradients, optimizer states, activations, and (FSDP) gathered parameters,
        (DDP) gradient buckets, then `peak`, the largest sum over the step's phases."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {num_processes}")
        fsdp = strategy == "fsdp"
        shard = num_processes if fsdp else 1
        parts = {"weights": _ceil_div(self.weight_bytes, shard), "gradients": _ceil_div(self.gradient_bytes, shard),
                 "optimizer": _ceil_div(self.optimizer_bytes, shard), "activations": self._activations(fsdp)}
        persistent = parts["weights"] + parts["optimizer"]
        if fsdp:  # the root's params (and grads, reduced at the end) through the step; ~2 layers' params and one
            # layer's unsharded grads in flight; grads are made in the param dtype, reduced in fp32
            largest = max(self.layers, key=lambda layer: layer.params)
            flight = self.param_bytes_in_flight
            root_trainable = self.trainable_params - sum(layer.trainable for layer in self.layers)
            parts["in_flight"] = (self.root_params * flight + root_trainable * (flight + 4)
                                  + 2 * largest.params * flight + largest.trainable * (flight + 4))
            persistent += parts["in_flight"]
        elif num_processes > 1:  # DDP copies every gradient into its flat all-reduce buckets
            parts["buckets"] = self.gradient_bytes
            persistent += parts["buckets"]
        parts["peak"] = persistent + self._step_peak(fsdp, shard)
        return parts

    def peak(self, num_processes: int = 1, strategy: str = "ddp") -> int:
        """Peak bytes per device with `num_processes` processes under `strategy` (ddp | fsdp)."""
        return self.breakdown(num_processes, strategy)["peak"]

    def _step_peak(self, fsdp: bool, shard: int) -> int:
        """The largest of: the start of the backward pass, each layer's backward (top down), the optimizer step."""
        casts = 0 if fsdp else sum(layer.held_casts for layer in self.layers)
        kept = self._kept(fsdp)
        grads = _ceil_div(self.head_grad_bytes, shard)
        peak = sum(kept) + self.head_saved + (0 if fsdp else self.head_casts) + casts + self.head_transient + grads
        below = sum(kept)
        for layer, keeps in zip(reversed(self.layers), reversed(kept), strict=True):
            below -= keeps
            layer_grads = _ceil_div(4 * layer.trainable, shard)
            recomputed = layer.saved_bytes(fsdp)
            peak = max(peak, below + recomputed + self.layer_transient + casts + grads + layer_grads)
            grads += layer_grads
        grads += _ceil_div(self.embedding_grad_bytes, shard)
        return max(peak, grads + _ceil_div(self.optimizer_transient, shard))


def optimizer_state_bytes(name: str, trainable_sizes: list[int]) -> int:
    """Bytes of optimizer state for trainable tensors of these element counts (adamw | adam8bit)."""
    if name == "adamw":
        return 8 * sum(trainable_sizes)
    if name == "adam8bit":
        return sum(8 * n if n < _BNB_MIN_8BIT else 2 * n + 2 * 4 * _ceil_div(n, _BNB_BLOCK) for n in trainable_sizes)
    raise ValueError(f"optimizer must be adamw or adam8bit, got {name!r}")


def model_config(config: TrainConfig) -> RuDolphConfig:
    """The architecture `config.model` names (preset, our model / run directory), with its overrides and
    `train.gradient_checkpointing` (null: by the method); an official checkpoint file carries no config, so it
    needs a preset name."""
    from ..hub import resolve_model_dir

    name, overrides = str(config.model.name), dict(config.model.overrides)
    path = Path(name).expanduser()
    if name in MODEL_PRESETS and not path.exists():
        base = RuDolphConfig.from_preset(name)
    else:
        try:
            base = RuDolphConfig.load(resolve_model_dir(path) / "config.json")
        except FileNotFoundError:
            raise ConfigError(f"model.name: {name!r} is neither a preset ({', '.join(MODEL_PRESETS)}) nor a model "
                              "or run directory with config.json; for an official pytorch_model.bin plan with the "
                              "preset it belongs to (model.name=350M, ...)") from None
    if config.gradient_checkpointing:
        overrides["gradient_checkpointing"] = True
    try:
        return base.replace(**overrides) if overrides else base
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.overrides: {error}") from None


def memory_plan(config: TrainConfig, *, device: Device | str = "cuda", arch: RuDolphConfig | None = None) -> MemoryPlan:
    """The memory plan of `config`'s training step at its `train.batch_size` per process.

    Args:
        config: the run configuration (model, freeze, finetune method and lora, optimizer, batch size, precision,
            checkpointing).
        device: "cuda" (fused attention, foreach AdamW: what a GPU run does; any accelerator) or "cpu" (the CPU's
            attention path that keeps its dropout scores, per-tensor AdamW), for checking against CPU measurements.
        arch: the model's architecture when already known (a trainer's loaded model: `model.config`), else it is
            read from `config.model` (`model_config`).
    """
    device = "cpu" if str(device).startswith("cpu") else "cuda"
    import torch

    from ..model.rudolph import RuDolph
    from .freeze import apply_freeze

    if arch is None:
        arch = model_config(config)
    elif config.gradient_checkpointing:
        arch = arch.replace(gradient_checkpointing=True)
    with torch.device("meta"):
        model = RuDolph(arch)
    try:
        apply_freeze(model, config.freeze)
    except ValueError as error:
        raise ConfigError(f"freeze: {error}") from None
    adapters = _adapters(model, config)
    # name -> (elements, trainable); adapters under peft's names, base weights whatever their storage
    entries = {name: (p.numel(), p.requires_grad and not (name.endswith(".weight")
                                                          and name.removesuffix(".weight") in adapters.quantized))
               for name, p in model.named_parameters()}
    for module, (fan_in, fan_out) in adapters.modules.items():
        entries[f"{module}.lora_A.default.weight"] = (adapters.r * fan_in, True)
        entries[f"{module}.lora_B.default.weight"] = (adapters.r * fan_out, True)
    trainable_sizes = [n for n, trains in entries.values() if trains]
    trainable = sum(trainable_sizes)
    total = sum(n for n, _ in entries.values())
    quantized = sum(entries[f"{name}.weight"][0] for name in adapters.quantized)
    weight_bytes = 4 * (total - quantized) + sum(_nf4_bytes(entries[f"{name}.weight"][0])
                                                  for name in adapters.quantized)
    precision = config.train.precision
    compute = 4 if precision == "no" else 2  # bytes of an autocast matmul's output
    batch = config.train.batch_size
    checkpointing = arch.gradient_checkpointing
    geometry = _Geometry(arch, batch)

    def numel(prefix: str, only_trainable: bool = False) -> int:
        return sum(n for name, (n, trains) in entries.items()
                   if name.startswith(prefix) and (trains or not only_trainable))

    def trains(name: str) -> bool:
        return entries[name][1]

    embedding_prefixes = ("text_embeddings", "image_embeddings", "l_text_pos_embeddings", "r_text_pos_embeddings",
                          "image_row_embeddings", "image_col_embeddings")
    grad_flows = any(trains(f"{prefix}.weight") for prefix in embedding_prefixes)
    layers = []
    for index in range(arch.num_layers):
        prefix = f"transformer.layers.{index}."
        base_trains = {linear: trains(f"{prefix}{linear}.weight") for linear in _LINEARS}
        adapted = [linear for linear in _LINEARS if prefix + linear in adapters.modules]
        layer_trainable = numel(prefix, only_trainable=True)
        input_grad, grad_flows = grad_flows, grad_flows or layer_trainable > 0
        saved = layer_input = held = casts = 0
        if grad_flows:
            saved, layer_input = _layer_saved(arch, geometry, base_trains, compute, device)
            saved += _adapter_saved(arch, geometry, adapters, adapted, base_trains, compute, device, input_grad)
            if not input_grad and not trains(f"{prefix}input_layernorm.weight"):
                saved -= 4 * geometry.tokens * (arch.hidden_size + 2)  # nothing below trains: the input norm keeps
                # neither its input nor its statistics
            if compute == 2:  # autocast caches casts of trainable weights for the step; frozen ones are saved for
                # the input's gradient (NF4 weights are saved packed, as they are stored)
                for linear in _LINEARS:
                    weight = entries[f"{prefix}{linear}.weight"][0]
                    if base_trains[linear]:
                        held += 2 * weight
                    elif prefix + linear not in adapters.quantized:
                        casts += 2 * weight
                held += 2 * sum(n for name, (n, _) in entries.items() if name.startswith(prefix) and ".lora_" in name)
        layers.append(LayerMemory(saved=saved, input=layer_input, params=numel(prefix), trainable=layer_trainable,
                                  saved_casts=casts, held_casts=held))

    head = entries["to_logits.1.weight"][0] + entries["to_logits.1.bias"][0]
    head_quantized = "to_logits.1" in adapters.quantized
    head_adapter = adapters.modules.get("to_logits.1")
    head_saved, head_transient = _head_bytes(arch, geometry, compute, trains("to_logits.1.weight"))
    if head_adapter is not None:  # per head (text rows, image rows): mask, dropped input, A x (`_lora_head_rows`)
        rows = batch * (arch.l_text_seq_length + arch.r_text_seq_length - 1 + arch.image_seq_length - 1)
        head_saved += rows * (_adapter_input_bytes(adapters.dropout, compute) * arch.hidden_size
                              + compute * adapters.r)
    head_casts = 0
    if compute == 2:
        head_casts = (0 if head_quantized else 2 * head) + 2 * (numel("to_logits.1.lora_"))
    layer_transient = 2 * 4 * geometry.tokens * arch.hidden_size * compute + 4 * geometry.tokens * arch.hidden_size
    largest_nf4 = max((entries[f"{name}.weight"][0] for name in adapters.quantized if name != "to_logits.1"),
                      default=0)  # dequantized (fp32, then a bf16 copy under autocast) in a layer's backward pass
    layer_transient += (4 + (2 if compute == 2 else 0)) * largest_nf4
    largest_trainable = max(trainable_sizes, default=0)
    if config.optim.name == "adamw":  # foreach on CUDA: one sqrt(v) copy of everything; per tensor on the CPU
        opt_transient = 4 * trainable if device == "cuda" else 2 * 4 * largest_trainable
    else:  # bitsandbytes updates in place on a GPU; per tensor, its CPU path holds 5 fp32 copies: both states
        # dequantised, the gradient, sqrt(v) and its scaled copy (`_optimizer_update_8bit_blockwise_cpu`)
        opt_transient = 0 if device == "cuda" else 5 * 4 * largest_trainable
    final_norms = numel("transformer.final_layernorm", True) + numel("to_logits", True)
    # the output layer's gradient is made as a text part and an image part, then concatenated (`_split_heads`)
    head_transient = max(head_transient, 4 * numel("to_logits.1", True))
    return MemoryPlan(
        model=str(config.model.name), batch_size=batch, seq_length=arch.total_seq_length,
        positions=geometry.tokens, precision=precision, gradient_checkpointing=checkpointing,
        optimizer=config.optim.name, device=device, trainable_params=trainable, frozen_params=total - trainable,
        weight_bytes=weight_bytes, gradient_bytes=4 * trainable,
        optimizer_bytes=optimizer_state_bytes(config.optim.name, trainable_sizes), layers=tuple(layers),
        head_saved=head_saved, head_casts=head_casts, head_transient=head_transient,
        layer_transient=layer_transient, optimizer_transient=opt_transient, head_grad_bytes=4 * final_norms,
        embedding_grad_bytes=4 * sum(numel(prefix, True) for prefix in embedding_prefixes),
        root_params=total - sum(layer.params for layer in layers), param_bytes_in_flight=compute,
        method=config.finetune.method, adapter_params=sum(r for name, (r, _) in entries.items() if ".lora_" in name),
        quantized_params=quantized)


@dataclass(frozen=True)
class _Adapters:
    """The LoRA side of a run: targeted linear -> (in, out) features, rank, dropout, and the linears stored in NF4."""

    modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    quantized: frozenset[str] = frozenset()
    r: int = 0
    dropout: float = 0.0


def _adapters(model, config: TrainConfig) -> _Adapters:
    """What `rudolph_ft.lora.apply_lora` would inject into (and quantize in) this meta-device model."""
    method, lora = config.finetune.method, config.lora
    if method == "full":
        return _Adapters()
    from torch import nn

    from ..lora import target_modules

    try:
        names = target_modules(model, list(lora.targets))
    except ValueError as error:
        raise ConfigError(f"lora.targets: {error}") from None
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    quantized: set[str] = set()
    if method == "qlora":
        quantized = set(names) if lora.quantize == "targets" else \
            set(names) | {name for name in linears if name.startswith("transformer.layers.")}
    return _Adapters(modules={name: (linears[name].in_features, linears[name].out_features) for name in names},
                     quantized=frozenset(quantized), r=lora.r, dropout=lora.dropout)


def _nf4_bytes(elements: int) -> int:
    """Bytes of one weight as bitsandbytes' `Params4bit` stores it: packed 4-bit values, an 8-bit absmax per block of
    64 (double quantization), an fp32 scale per 256 of those and their 8-bit code, the fp32 offset and the NF4
    code (each weight's own copies, as `bitsandbytes.functional.quantize_4bit` makes them)."""
    blocks = _ceil_div(elements, _NF4_BLOCK)
    return (_ceil_div(elements, 2) + blocks + 4 * _ceil_div(blocks, _NF4_NESTED_BLOCK) + 4 * _NF4_NESTED_BLOCK + 4
            + 4 * _NF4_CODE)


def _adapter_input_bytes(dropout: float, compute: int, input_grad: bool = True) -> int:
    """Bytes per input feature an adapter saves: its dropout's bool mask (the model's dropout, `_AdapterDropout`;
    only when its input needs a gradient) and the dropped input A keeps for its gradient (fp32, or autocast's
    copy)."""
    mask = 1 if dropout > 0 and input_grad else 0
    return mask + compute


def _adapter_saved(arch: RuDolphConfig, geo: _Geometry, adapters: _Adapters, adapted: list[str],
                   base_trains: dict[str, bool], compute: int, device: str, input_grad: bool) -> int:
    """Bytes one layer's adapters save (peft's `Linear.forward`: `B(A(dropout(x))) * scale`): per adapted linear
    the dropout mask, the dropped input (without dropout in fp32: x itself, already saved when the base weight trains
    or when it is the fused attention's output) and A x."""
    n, hidden, saved = geo.tokens, arch.hidden_size, 0
    fused = device == "cuda" or arch.attention_dropout_prob == 0
    for linear in adapted:
        fan_in = 4 * hidden if linear == "mlp.dense_4h_to_h" else hidden
        shared = compute == 4 and adapters.dropout == 0 and (
            base_trains[linear] or (linear == "attention.dense" and fused and not geo.prefix))
        per_input = _adapter_input_bytes(adapters.dropout, compute, input_grad or linear != "attention.query_key_value")
        saved += n * (fan_in * (per_input - (compute if shared else 0)) + compute * adapters.r)
    return saved


@dataclass(frozen=True)
class _Geometry:
    """Positions of a loss-only training forward: S - 1 per row (the last position feeds no loss); with B >= 2 rows
    the common empty left text of a training batch runs once (`RuDolph._shared_prefix_length`)."""

    prefix: int  # shared left-text positions (0: no sharing)
    rows: int  # positions per row after the shared prefix
    batch: int

    def __init__(self, arch: RuDolphConfig, batch: int) -> None:
        length = arch.total_seq_length - 1
        shared = batch >= 2
        object.__setattr__(self, "prefix", arch.l_text_seq_length if shared else 0)
        object.__setattr__(self, "rows", length - self.prefix)
        object.__setattr__(self, "batch", batch)

    @property
    def tokens(self) -> int:
        return self.prefix + self.batch * self.rows


def _causal_pairs(queries: int, offset: int, chunk: int) -> int:
    """Scores the CPU attention path keeps: each block of `chunk` queries sees the keys up to its last position."""
    return sum(min(chunk, queries - start) * (offset + min(start + chunk, queries))
               for start in range(0, queries, chunk))


def _layer_saved(arch: RuDolphConfig, geo: _Geometry, trains: dict[str, bool], compute: int,
                 device: str) -> tuple[int, int]:
    """(bytes autograd saves for one layer's backward, bytes of its input), from `TransformerLayer.forward`.

    fp32 per position x hidden: input 4 (kept by the input norm), the norm's output for query_key_value (if that
    weight trains), queries/keys/values 3 c, the attention context for `dense` (if it trains), the dense output
    kept by the fp16 clamp c, a dropout mask 1, the sandwich norm's fp32 input 4, the residual for the
    post-attention norm 4, that norm's output (if dense_h_to_4h trains) c, the GELU input 4c, its output (if
    dense_4h_to_h trains) 4c, a dropout mask 1 and the second sandwich norm's input 4; c = 4 (fp32) or 2 (autocast).
    """
    hidden, heads = arch.hidden_size, arch.num_attention_heads
    n, c = geo.tokens, compute
    sandwich = 4 if device == "cuda" else c  # CUDA autocast runs layer norms on an fp32 copy, the CPU's on bf16
    per_position = 4 + 3 * c + c + sandwich + 4 + 4 * c + sandwich
    per_position += c * (trains["attention.query_key_value"] + trains["attention.dense"]
                         + trains["mlp.dense_h_to_4h"]) + 4 * c * trains["mlp.dense_4h_to_h"]
    if arch.output_dropout_prob > 0:
        per_position += 2  # two bool keep masks
    if not arch.cogview_sandwich_layernorm:
        per_position -= 2 * sandwich
    saved = per_position * n * hidden
    norms = 4 if arch.cogview_sandwich_layernorm else 2
    saved += norms * 2 * 4 * n  # mean and rstd per position of each layer norm
    if geo.prefix:  # shared left text: each row's keys/values are concatenated with the prefix's
        saved += 2 * geo.batch * (geo.prefix + geo.rows) * hidden * c
    # attention proper: (queries, keys, key offset) of each attention call
    calls = [(geo.prefix, 0, 1), (geo.rows, geo.prefix, geo.batch)] if geo.prefix else [
        (geo.rows, 0, geo.batch)]
    if device == "cpu" and arch.attention_dropout_prob > 0:  # probabilities, keep mask, dropped probabilities
        if geo.prefix:
            saved += geo.batch * geo.rows * hidden * c  # the rows' queries, copied into (B * heads, T, d)
        saved += sum(batch * heads * _causal_pairs(queries, offset, _CPU_QUERY_CHUNK) * (2 * c + 1)
                     for queries, offset, batch in calls if queries)
    else:  # fused kernels: the output, a log-sum-exp per row and head, the float mask
        if not geo.prefix and trains["attention.dense"]:
            saved -= n * hidden * c  # `dense` then reads a view of the kernel's output, counted below
        saved += sum(batch * queries * hidden * c + 4 * batch * heads * queries
                     + queries * 16 * math.ceil((offset + queries) / 16) * c
                     for queries, offset, batch in calls if queries)
    return saved, 4 * n * hidden


def _head_bytes(arch: RuDolphConfig, geo: _Geometry, compute: int, head_trains: bool = True) -> tuple[int, int]:
    """(bytes saved by the final norms and the loss, its largest temporaries), from `RuDolph._segment_losses`.

    The layers' output is unfolded to (B, S - 1, hidden) and passes two fp32 layer norms; the text head sees the
    left and right text positions (a copy), the image head the image positions (a view, or an autocast copy); each
    keeps fp32 log-probabilities (B, positions, vocabulary) for the cross-entropy. The heads' inputs are kept only
    for the output layer's weight gradient (`head_trains`).
    """
    hidden, batch = arch.hidden_size, geo.batch
    length = arch.total_seq_length - 1
    text_positions = arch.l_text_seq_length + arch.r_text_seq_length - 1
    image_positions = arch.image_seq_length - 1
    text_logits = batch * text_positions * arch.text_vocab_size
    image_logits = batch * image_positions * arch.image_vocab_total
    rows = batch * length * hidden
    saved = 2 * 4 * rows + 2 * 2 * 4 * batch * length + 4 * (text_logits + image_logits)
    if head_trains and compute == 4:  # the head's input, viewed by the image head, and the text positions' copy
        saved += 4 * rows + 4 * batch * text_positions * hidden
    elif head_trains:  # bf16 / fp16 copies of the heads' inputs
        saved += 2 * batch * (text_positions + image_positions) * hidden
    largest = max(text_logits, image_logits)
    forward = largest * (4 if compute == 4 else 6)  # the logits (and their fp32 copy) next to the log-probabilities
    backward = 2 * 4 * largest  # the loss's gradient and the log-softmax's
    return saved, max(forward, backward)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def format_plan(plan: MemoryPlan, gpu_counts: tuple[int, ...] = GPU_COUNTS) -> str:
    """A readable report: parameters, bytes of one replica, and the peak per device for DDP and FSDP (GiB)."""
    ckpt = "on" if plan.gradient_checkpointing else "off"
    lines = [
        f"memory plan: {plan.model}, batch {plan.batch_size} per process, sequence {plan.seq_length} "
        f"({plan.positions} positions per step)",
        f"precision {_precision(plan)}, gradient checkpointing {ckpt}, optimizer {plan.optimizer}",
        f"parameters: {plan.trainable_params:,} trainable, {plan.frozen_params:,} frozen "
        f"({100 * plan.trainable_params / max(plan.total_params, 1):.1f}% trainable)",
        *([f"{plan.method}: {plan.adapter_params:,} adapter parameters"
           + (f", {plan.quantized_params:,} base weights in NF4" if plan.quantized_params else "")]
          if plan.method != "full" else []),
        "",
        f"{'one process, unsharded':<22}{'GiB':>8}",
    ]
    weights = "weights (fp32 + NF4)" if plan.quantized_params else "weights (fp32)"
    rows = [(weights, plan.weight_bytes), ("gradients (fp32)", plan.gradient_bytes),
            (f"optimizer ({plan.optimizer})", plan.optimizer_bytes), ("activations", plan.activation_bytes)]
    lines += [f"{name:<22}{_gib(value):>8}" for name, value in rows]
    lines += ["", f"{'peak per device':<22}" + "".join(f"{f'{n} GPU' + ('s' if n > 1 else ''):>9}"
                                                       for n in gpu_counts)]
    for strategy in STRATEGIES if plan.method == "full" else ("ddp",):  # adapters train under DDP only
        lines.append(f"{strategy.upper():<22}" + "".join(f"{_gib(plan.peak(n, strategy)):>9}" for n in gpu_counts))
    lines.append("(GiB; DDP replicates the model and adds gradient buckets; FSDP shards weights, gradients and "
                 "optimizer states per layer)")
    return "\n".join(lines)


def _precision(plan: MemoryPlan) -> str:
    return "fp32" if plan.precision == "no" else plan.precision


def peak_line(plan: MemoryPlan, num_processes: int = 1, strategy: str = "ddp") -> str:
    """One line for the start of a run: the planned peak per device and what it is made of."""
    parts = plan.breakdown(num_processes, strategy)
    ckpt = ", checkpointing" if plan.gradient_checkpointing else ""
    return (f"memory plan: ~{_gib(parts['peak'])} GiB peak per device ({strategy} x {num_processes}, batch "
            f"{plan.batch_size}, {_precision(plan)}{ckpt}: weights {_gib(parts['weights'])}, gradients "
            f"{_gib(parts['gradients'])}, optimizer {_gib(parts['optimizer'])}, activations "
            f"{_gib(parts['activations'])} GiB)")
