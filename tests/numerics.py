"""Tolerances for numerical tests, in one place: what may differ between machines, and by how much.

Two float32 computations of the same value that sum in a different order (another SIMD width, BLAS kernel, thread
count, sequence length or batch size) agree to within the forward error of summation: for a sum of n terms each
side is off by at most ~n * eps/2 * sum(|terms|) (Higham, "Accuracy and Stability of Numerical Algorithms", 4.2),
so the two differ by at most

    n * eps32 * scale,     scale = the compared tensor's largest magnitude (standing in for sum(|terms|)),

where n (`reduction`) is the length of the longest sum behind each compared value (`longest_sum`: for RuDOLPH the
MLP's inner width, the keys attended over, or batch * positions for a weight gradient). `assert_close_scaled` and
`assert_scalar_close` check it; `eps` switches precision (bf16 autocast), `max_relative` caps it (parity checks
against reference fixtures: at most `PARITY_REL`), `elementwise` scales each value by its own magnitude (perplexities,
whose error is relative). An absolute `atol=1e-6` is right only for values near 1 after one rounding: a bias gradient
of size 5 summing 68 positions legitimately differs by ~3e-6 between two kernels (measured: up to ~8 eps * scale).

Argmax decisions (greedy tokens, VQGAN codes, sampled tokens) cannot be compared with a tolerance: a different
summation order flips a decision whose margin is at the level of those roundings. `assert_tokens_match` allows a
difference only where the decision's margin (`top2_margins`, `gumbel_margins`, `sampling_margins`,
`decoding_margins`) is under `NEAR_TIE`, and reports it as a `NearTieWarning`; anywhere else a differing token fails.
"""

from __future__ import annotations

import math
import warnings

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-7
# Logit gap under which a decision may flip between machines: 100x the ~1e-6 logit differences of reordered sums.
NEAR_TIE = 1e-4
PARITY_REL = 1e-5  # the most a check against reference fixtures may allow, relative to the compared magnitude


class NearTieWarning(UserWarning):
    """A token comparison stopped at a near-tie (a flip there is rounding, not a bug)."""


def _tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu()
    return torch.tensor(value, dtype=torch.float64)


def longest_sum(config, rows: int = 1) -> int:
    """`reduction` of a RuDOLPH `config`'s logits and losses: its longest float32 sum is the MLP's 4 * hidden inner
    width or the keys attended over; for gradients over `rows` sequences, every position summed into a weight's."""
    return max(4 * config.hidden_size, rows * config.total_seq_length)


def scaled_tolerance(actual, expected, *, reduction: int, eps: float = EPS32, max_relative: float | None = None,
                     elementwise: bool = False) -> torch.Tensor:
    """`reduction * eps * scale` (at most `max_relative * scale`), scale = the largest magnitude of either side, or
    with `elementwise` each value's own (for errors that are relative, like a perplexity's: exp of a mean)."""
    if reduction < 1:
        raise ValueError(f"reduction is the number of terms summed into a compared value (>= 1), got {reduction}")
    magnitude = torch.maximum(_tensor(actual).abs(), _tensor(expected).abs())
    scale = magnitude if elementwise else magnitude.max()
    relative = reduction * eps if max_relative is None else min(reduction * eps, max_relative)
    return relative * scale


def assert_close_scaled(actual, expected, *, reduction: int, eps: float = EPS32, max_relative: float | None = None,
                        elementwise: bool = False, msg: str = "") -> None:
    """Assert |actual - expected| <= reduction * eps * scale everywhere (see the module docstring).

    Args:
        actual, expected: tensors (or numbers) of one shape; compared in float64.
        reduction: the length of the longest sum behind each compared value.
        eps: machine epsilon of the precision computed in (float32 by default).
        max_relative: cap on reduction * eps: parity checks against reference fixtures pass `PARITY_REL`.
        elementwise: scale each value by its own magnitude instead of the largest one.
        msg: what is compared (a parameter name), put in the failure message.
    """
    a, e = _tensor(actual), _tensor(expected)
    assert a.shape == e.shape, f"{msg}: shapes differ, {tuple(a.shape)} vs {tuple(e.shape)}"
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite) and torch.equal(a[~finite].nan_to_num(), e[~finite].nan_to_num()), \
        f"{msg}: non-finite values differ"
    a, e = a[finite], e[finite]
    if not e.numel():
        return
    tolerance = scaled_tolerance(a, e, reduction=reduction, eps=eps, max_relative=max_relative,
                                 elementwise=elementwise)
    diff = (a - e).abs()
    worst = int((diff - tolerance).argmax())
    allowed, cap = float(tolerance.expand_as(a)[worst]), "" if max_relative is None else f", at most {max_relative}"
    assert diff[worst] <= allowed, (f"{msg}: ours {float(a[worst]):.8g} vs expected {float(e[worst]):.8g} (flat index "
                                    f"{worst}) differ by {float(diff[worst]):.3g} > {allowed:.3g} allowed (reduction "
                                    f"{reduction} * eps {eps:.3g}{cap}, times the magnitude)")


def assert_scalar_close(actual, expected, *, reduction: int, eps: float = EPS32, max_relative: float | None = None,
                        msg: str = "") -> None:
    """`assert_close_scaled` for one number (a loss, a perplexity), e.g. a float or a 0-d tensor."""
    a, e = _tensor(actual), _tensor(expected)
    assert a.numel() == e.numel() == 1, f"{msg}: not single numbers, shapes {tuple(a.shape)} and {tuple(e.shape)}"
    assert_close_scaled(a.reshape(()), e.reshape(()), reduction=reduction, eps=eps, max_relative=max_relative, msg=msg)


# Decisions --------------------------------------------------------------------------------------------------------
def top2_margins(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Gap between the largest and second-largest logit along `dim` (how far an argmax is from flipping)."""
    top = logits.float().topk(2, dim=dim).values
    return top.select(dim, 0) - top.select(dim, 1)


def gumbel_margins(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """(B, h*w) top-2 margins of the noisy VQGAN logits whose argmax `gumbel_max_codes` takes: `logits` (B, n_embed,
    h, w) / temperature + Gumbel noise drawn from `generator` as it draws it."""
    noise = torch.empty(logits.shape, dtype=logits.dtype).exponential_(generator=generator).log_().neg_()
    return top2_margins(logits / temperature + noise, dim=1).flatten(1)


def sampling_margins(logits: torch.Tensor, uniforms: torch.Tensor | None, settings) -> torch.Tensor:
    """How far each row's `rudolph_ft.pipelines.sampling.sample` draw is from changing, in logit units.

    Greedy (top_k=1): the top-2 gap. Otherwise the smallest of: the gap at the top-k cut, and the distances of the
    top-p cut and of the inverse-CDF target to the nearest cumulative probability; a logit change of d moves
    (cumulative) probabilities by at most ~2 d / temperature, so those distances count as distance * temperature / 2.

    Args:
        logits: (R, V) the logits `sample` saw; uniforms: (R,) its uniforms (None for greedy); settings: its
            `SamplingSettings`.

    Returns:
        (R,) float margins.
    """
    if settings.top_k == 1:
        return top2_margins(logits)
    scaled = logits.double() / settings.temperature
    margins = torch.full((scaled.shape[0],), math.inf, dtype=torch.float64)
    if 0 < settings.top_k < scaled.shape[-1]:
        ordered = scaled.sort(dim=-1, descending=True).values
        margins = torch.minimum(margins, (ordered[:, settings.top_k - 1] - ordered[:, settings.top_k]) *
                                settings.temperature)
        scaled = scaled.masked_fill(scaled < ordered[:, settings.top_k - 1:settings.top_k], -math.inf)
    if settings.top_p < 1.0:
        ascending, order = scaled.sort(dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        threshold = 1 - settings.top_p
        margins = torch.minimum(margins, (cumulative - threshold).abs().min(-1).values * settings.temperature / 2)
        remove = cumulative <= threshold
        remove[:, -1] = False
        scaled = scaled.masked_fill(remove.scatter(1, order, remove), -math.inf)
    cdf = scaled.softmax(dim=-1).cumsum(dim=-1)
    target = uniforms.double().to(cdf.device)[:, None] * cdf[:, -1:]
    distance = (cdf - target).abs().min(-1).values * settings.temperature / 2
    return torch.minimum(margins, distance).float()


@torch.no_grad()
def decoding_margins(model, prompt: torch.Tensor, tokens: torch.Tensor, uniforms: torch.Tensor | None, settings, *,
                     head: str, columns: int, given: int = 0) -> torch.Tensor:
    """`sampling_margins` of every decoded token, from one teacher-forced forward over `prompt` + `tokens`.

    A teacher-forced forward differs from KV-cached decoding by rounding only (~1e-6), far under `NEAR_TIE`.

    Args:
        model: a `RuDolph` (any model taking `(ids, head=...)` and returning `.logits`).
        prompt: (R, P) ids before `tokens`; tokens: (R, T) ids as fed back, the first `given` of them not decoded
            (e.g. a caption template).
        uniforms: (R, T - given) the draw's uniforms (None for greedy); settings: its `SamplingSettings`.
        head: the output head decoded from; columns: the sampled logit columns.

    Returns:
        (R, T) margins, inf for the `given` tokens.
    """
    inputs = torch.cat([prompt, tokens[:, :-1]], dim=1)
    logits = model(inputs, head=head).logits[:, prompt.shape[1] - 1 + given:, :columns]  # (R, T - given, columns)
    margins = torch.full(tokens.shape, math.inf)
    for t in range(logits.shape[1]):
        margins[:, given + t] = sampling_margins(logits[:, t], None if uniforms is None else uniforms[:, t], settings)
    return margins


def assert_tokens_match(ours: torch.Tensor, expected: torch.Tensor, margins: torch.Tensor, *, sequential: bool,
                        what: str) -> int:
    """Assert equal tokens, except where the decision that picked them was a near-tie (margin < `NEAR_TIE`).

    Args:
        ours, expected: (R, T) ids (or any argmax decisions, e.g. VQGAN codes).
        margins: (R, T) each decision's margin (`top2_margins`, `sampling_margins`, a fixture's).
        sequential: rows are autoregressive: after a near-tie flip the rest of that row follows another prefix and
            is not compared. Otherwise every cell is its own decision.
        what: named in failure messages and warnings.

    Returns:
        How many cells were left uncompared or allowed to differ (each reported as a `NearTieWarning`).
    """
    assert ours.shape == expected.shape == margins.shape, f"{what}: shapes {ours.shape}, {expected.shape}, " \
        f"{margins.shape}"
    differ = (ours != expected).reshape(ours.shape[0], -1)
    margins = margins.reshape(differ.shape).float()
    if sequential:  # only each row's first difference is a decision on the same prefix
        first = differ.cumsum(1).eq(1) & differ
        differ, skipped = first, (differ.cumsum(1) > 0) & ~first
    else:
        skipped = torch.zeros_like(differ)
    rows, cols = differ.nonzero(as_tuple=True)
    real = margins[rows, cols] >= NEAR_TIE
    where = list(zip(rows[real].tolist(), cols[real].tolist(), strict=True))[:10]
    assert not real.any(), (f"{what}: {int(real.sum())} token(s) differ where the decision was clear, at "
                            f"(row, position) {where}, margins {margins[rows, cols][real].tolist()[:10]} >= {NEAR_TIE}")
    relaxed = int(differ.sum() + skipped.sum())
    if relaxed:
        warnings.warn(NearTieWarning(f"{what}: {int(differ.sum())} decision(s) flipped at a near-tie (margins "
                                     f"{margins[rows, cols].tolist()[:10]} < {NEAR_TIE}); {int(skipped.sum())} later "
                                     "token(s) of those rows not compared"), stacklevel=2)
    return relaxed
