"""Image captioning: sample right-text continuations of a template given an image, with a KV cache.

What the reference `generate_captions` (rc4, the article's; rc10's `ruDolphApi.generate_captions`) does, faster:
the image is encoded once, `[left text | image | template]` runs once per image and its keys/values are copied to
the n samples, each step then runs only the newest token (the reference re-runs embeddings, norms and the output
layer over the whole sequence), and a batch stops once every caption has produced eos (the reference always
generates every remaining right-text token). Sampled ids outside the BPE vocabulary become eos, as there.
Captions end at their first eos (rc10; the article passes rc4's `limit_eos=False` and so keeps decoding past eos).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..components import Components
from ..model import RuDolph
from ..tasks import FOOD
from .inputs import ImageInput, image_codes
from .prompts import Prompter
from .sampling import SamplingSettings, decode_loop, draw_uniforms, model_step
from .scoring import in_eval_mode, prefix_cache

__all__ = ["CaptionSamples", "generate_captions", "generate_captions_batch", "sample_caption_ids"]

@dataclass
class CaptionSamples:
    """The captions sampled for one image.

    Attributes:
        texts: every sampled caption, in sample order (empty strings included).
        ids: (n, r_text_seq_length) right-text ids: template prefix, then sampled tokens (pads after eos unless
            sampled with `stop_at_eos=False`).
        codes: (image_seq_length,) the image's codes.
    """

    texts: list[str]
    ids: torch.Tensor
    codes: torch.Tensor

    def unique(self) -> list[str]:
        """Distinct non-empty captions in order of first appearance."""
        return list(self.counts())

    def counts(self) -> Counter:
        """How often each distinct non-empty caption was sampled (insertion-ordered)."""
        return Counter(text for text in self.texts if text)


@torch.inference_mode()
def sample_caption_ids(
    model: RuDolph,
    codes: torch.Tensor,
    left: torch.Tensor,
    prefix: torch.Tensor,
    n: int,
    settings: SamplingSettings,
    *,
    prompter: Prompter,
    seed: int | None = FOOD.sampling.seed,
    batch_size: int = 16,
    stop_at_eos: bool = True,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Right-text ids of `n` samples per image (the model-level core of `generate_captions`).

    Args:
        model: a `RuDolph` in eval mode.
        codes: (B, image_seq_length) image codes.
        left: (l_text_seq_length,) left text; prefix: (k,) start of the right text (bos + template).
        n: samples per image; settings: top-k / top-p / temperature.
        prompter: gives the sampled text columns and the eos rule of the reference style.
        seed: seed of the local generator (None: random). Sample j of every image uses the same random numbers,
            whatever the batch size and the other images.
        batch_size: sequences decoded together.
        stop_at_eos: stop a batch once all its captions ended (False: generate every position, like the reference).
        use_cache: False re-runs the whole sequence at every step (slow; to check the cache).
        progress: called as `progress(done, total)` in decoding steps of all batches, after each step (a batch
            that stops early jumps to its end).

    Returns:
        (B * n, r_text_seq_length) ids, image-major (rows i*n .. i*n+n-1 belong to image i).
    """
    cfg, device = model.config, codes.device
    steps = cfg.r_text_seq_length - prefix.numel()
    images = codes.shape[0]
    prompt = torch.cat([left.to(device).expand(images, -1), codes, prefix.to(device).expand(images, -1)], dim=1)
    # every image gets the same numbers from a seed, so its captions do not depend on the other images of the call
    uniforms = draw_uniforms(n, steps, seed).repeat(images, 1) if seed is not None else \
        draw_uniforms(images * n, steps, None)
    prefill, first_logits = None, None
    if use_cache:  # one pass over each image's prompt, shared by its n samples
        prefill, first_logits = prefix_cache(model, prompt)  # first_logits: (B, V_text)
    chunks, total = [], steps * math.ceil(images * n / batch_size)
    for start in range(0, images * n, batch_size):
        done = start // batch_size * steps
        tell = None if progress is None else lambda t, done=done: progress(done + t, total)
        rows = torch.arange(start, min(start + batch_size, images * n), device=device)
        image_of_row = rows // n
        if use_cache:
            step = model_step(model, "text", cache=prefill.fork(image_of_row))
            logits = first_logits[image_of_row]
        else:
            step = model_step(model, "text", prompt=prompt[image_of_row])
            logits = model(prompt[image_of_row], head="text", last_only=True).logits[:, -1]
        sampled = decode_loop(step, logits, uniforms[rows.cpu()], settings, columns=prompter.text_columns,
                              end_from=prompter.bpe_vocab_size, eos_id=prompter.tokenizer.eos_id,
                              stop_at_eos=stop_at_eos, progress=tell)
        if progress is not None:
            progress(done + steps, total)
        chunks.append(torch.cat([prefix.to(device).expand(len(rows), -1), sampled], dim=1))
    return torch.cat(chunks).cpu()


@in_eval_mode
def generate_captions_batch(
    components: Components,
    images: Sequence[ImageInput],
    template: str = FOOD.prompt,
    n: int = 4,
    *,
    top_k: int = FOOD.sampling.top_k,
    top_p: float = FOOD.sampling.top_p,
    temperature: float = FOOD.sampling.temperature,
    seed: int | None = FOOD.sampling.seed,
    batch_size: int = 16,
    style: str = FOOD.sampling.style,
    stop_at_eos: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[CaptionSamples]:
    """Sample `n` captions for each of several images (see `generate_captions`); images share decoding batches.

    `stop_at_eos=False` decodes every right-text position even when all captions have ended, as the reference
    does (for like-for-like timing); the captions are the same. `progress(done, total)`: told after every decoding
    step, counted over all images (e.g. `lambda done, total: bar(done / total)` for a web demo's progress bar).
    """
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, style)
    settings = SamplingSettings(top_k=top_k, top_p=top_p, temperature=temperature)
    left, prefix = prompter.empty_left(), prompter.right_prefix(template)
    per_group = max(1, batch_size // max(n, 1))  # images whose prompts are cached and decoded together
    groups = math.ceil(len(images) / per_group)
    results = []
    for start in range(0, len(images), per_group):
        group = list(images[start:start + per_group])
        codes = image_codes(components, group, batch_size=batch_size)
        index = start // per_group
        tell = None if progress is None else \
            lambda done, total, index=index: progress(index * total + done, groups * total)
        ids = sample_caption_ids(model, codes, left, prefix, n, settings, prompter=prompter, seed=seed,
                                 batch_size=batch_size, stop_at_eos=stop_at_eos, progress=tell)
        for i in range(len(group)):
            rows = ids[i * n:(i + 1) * n]
            results.append(CaptionSamples([prompter.decode(row) for row in rows], rows, codes[i].cpu()))
    return results


def generate_captions(
    components: Components,
    image: ImageInput,
    template: str = FOOD.prompt,
    n: int = 4,
    *,
    top_k: int = FOOD.sampling.top_k,
    top_p: float = FOOD.sampling.top_p,
    temperature: float = FOOD.sampling.temperature,
    seed: int | None = FOOD.sampling.seed,
    batch_size: int = 16,
    style: str = FOOD.sampling.style,
    unique: bool = True,
) -> list[str]:
    """Caption an image: sample `n` continuations of `template` (defaults: the article's settings, `FOOD.sampling`
    of `rudolph_ft.tasks`).

    Args:
        components: model, tokenizer and VQGAN (`load_components`).
        image: a path, PIL image or (3, H, W) tensor in [0, 1].
        template: start of every caption (lower-cased), e.g. "блюдо:".
        n: captions to sample; top_k, top_p, temperature: sampling (top_k=1: greedy).
        seed: the same seed gives the same captions (a local generator; None: random).
        batch_size: captions decoded together.
        style: "rc4" (the article's prompts) or "rc10" (task tokens of the v2 checkpoints), see `prompts`.
        unique: drop repeats and empty captions (as the reference does), keeping first-appearance order.

    Returns:
        The captions, the template included (e.g. "блюдо: борщ; белков: 3.2; ...").
    """
    samples = generate_captions_batch(components, [image], template, n, top_k=top_k, top_p=top_p,
                                      temperature=temperature, seed=seed, batch_size=batch_size, style=style)[0]
    return samples.unique() if unique else samples.texts
