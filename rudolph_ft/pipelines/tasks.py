"""The FBC2 tasks at inference: visual QA, text QA / math QA, text recognition, text continuation.

Each task's prompt is built by `rudolph_ft.tasks` (the public FBC2 baseline's layout; see that module for the
facts and the differences we chose). Decoding reuses the caption machinery: one cached pass over each prompt, then
one token per step (`prefix_cache`, `model_step`, `decode_loop`), sampled over the BPE ids only (the baseline's
`allowed_token_ids`), each answer ending at its first eos. A seed gives every input the same random numbers, so an
answer depends neither on the batch size nor on the other inputs of the call. Defaults are the baseline's sampling
(`run_inference`: top-k 32, top-p 0.8, temperature 1.0).

    >>> answer(components, "borscht.jpg", "какое это блюдо?")
    >>> answer_text(components, "сколько белков в 100 г борща?", context="борщ: белков 3,5 г на 100 г.")
    >>> read_text(components, "sign.jpg")
    >>> continue_text(components, "борщ варят из")

On a model without the FBC2 task tokens the prompts carry the instruction in plain text (a warning says so once
per model).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence

import torch

from ..components import Components
from ..model import RuDolph
from ..tasks import BASELINE_SAMPLING, TaskLayout, format_options, get_task
from .inputs import ImageInput, image_codes
from .prompts import Prompter
from .sampling import SamplingSettings, decode_loop, draw_uniforms, model_step
from .scoring import in_eval_mode, prefix_cache

__all__ = [
    "ANSWER_SAMPLING", "answer", "answer_batch", "answer_text", "answer_text_batch", "read_text", "read_text_batch",
    "continue_text", "continue_text_batch", "sample_text_ids",
]

ANSWER_SAMPLING = BASELINE_SAMPLING.settings()  # the baseline's run_inference: every FBC2 `Task.sampling`
_SEED = BASELINE_SAMPLING.seed
_WARNED: weakref.WeakSet = weakref.WeakSet()  # models already told they lack the task tokens


@torch.inference_mode()
def sample_text_ids(model: RuDolph, prompts: torch.Tensor, steps: int, settings: SamplingSettings, *,
                    prompter: Prompter, seed: int | None = _SEED, batch_size: int = 16,
                    use_cache: bool = True) -> torch.Tensor:
    """Sample `steps` text tokens after each prompt (one answer per prompt), stopping at eos.

    Args:
        model: a `RuDolph` in eval mode.
        prompts: (B, T) ids from position 0 (left text, or left text + image + answer start).
        steps: tokens to sample at most (up to the end of the text segment the prompt ends in).
        prompter: its `bpe_vocab_size` and tokenizer give the sampled columns and the eos.
        seed: seed of the local generator (None: random); every prompt gets the same numbers.
        batch_size: prompts decoded together.
        use_cache: False re-runs the whole sequence at every step (slow; to check the cache).

    Returns:
        (B, steps) ids, pads after each row's eos.
    """
    rows = prompts.shape[0]
    uniforms = draw_uniforms(1, steps, seed).expand(rows, -1) if seed is not None else draw_uniforms(rows, steps, None)
    columns = min(prompter.tokenizer.vocab_size, prompter.bpe_vocab_size)  # the BPE ids (`allowed_token_ids`)
    chunks = []
    for start in range(0, rows, batch_size):
        chunk = prompts[start:start + batch_size]
        if use_cache:
            cache, logits = prefix_cache(model, chunk)
            step = model_step(model, "text", cache=cache)
        else:
            step = model_step(model, "text", prompt=chunk)
            logits = model(chunk, head="text", last_only=True).logits[:, -1]
        chunks.append(decode_loop(step, logits, uniforms[start:start + len(chunk)], settings, columns=columns,
                                  end_from=prompter.bpe_vocab_size, eos_id=prompter.tokenizer.eos_id))
    return torch.cat(chunks).cpu()


def _layout(components: Components) -> TaskLayout:
    """The model's `TaskLayout`; warns once per model that lacks the FBC2 task tokens."""
    layout = TaskLayout(components.model.config, components.tokenizer)
    if not layout.has_fbc2_tokens and components.model not in _WARNED:
        _WARNED.add(components.model)
        name = components.model.config.name or "this model"
        warnings.warn(f"{name} has no FBC2 task tokens (a 2.7B_fbc2 model has them): the task's instruction goes "
                      "in as plain text and the answers may be poor", UserWarning, stacklevel=3)
    return layout


def _solve(components: Components, task_name: str, parts: Sequence[Sequence[str | None]],
           images: Sequence[ImageInput] | None, settings: SamplingSettings, seed: int | None, batch_size: int,
           task_tokens: bool) -> list[str]:
    """Answers of one task for each input: its text `parts` and, for image tasks, its image."""
    model, task = components.model, get_task(task_name)
    cfg, layout = model.config, _layout(components)
    if not parts:
        return []
    rows = [task.prompt(layout, *texts, task_tokens=task_tokens) for texts in parts]
    left = torch.stack([row[0] for row in rows]).to(components.device)
    start = torch.stack([row[1] for row in rows]).to(components.device)
    if images is None:  # text-only tasks: image codes 0, as in training (see rudolph_ft.tasks)
        codes = torch.zeros(len(parts), cfg.image_seq_length, dtype=torch.long, device=components.device)
    else:
        codes = image_codes(components, list(images), batch_size=batch_size)
    prompter = Prompter(cfg, components.tokenizer, "rc10")
    ids = sample_text_ids(model, torch.cat([left, codes, start], dim=1), cfg.r_text_seq_length - start.shape[1],
                          settings, prompter=prompter, seed=seed, batch_size=batch_size)
    return [prompter.decode(row) for row in ids]


def _settings(top_k: int, top_p: float, temperature: float) -> SamplingSettings:
    return SamplingSettings(top_k=top_k, top_p=top_p, temperature=temperature)


def _each(values, count: int, what: str) -> list:
    """`values` as a list of `count` items (None: `count` Nones)."""
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise ValueError(f"got {count} inputs but {len(values)} {what}: give one per input (None for none)")
    return values


@in_eval_mode
def answer_batch(components: Components, images: Sequence[ImageInput], questions: Sequence[str],
                 options: Sequence[Sequence[str] | None] | None = None, *, top_k: int = ANSWER_SAMPLING.top_k,
                 top_p: float = ANSWER_SAMPLING.top_p, temperature: float = ANSWER_SAMPLING.temperature,
                 seed: int | None = _SEED, batch_size: int = 16, task_tokens: bool = False) -> list[str]:
    """Answer a question about each image (visual QA); see `answer`. `options`: one list (or None) per image."""
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images but {len(questions)} questions: give one question per image")
    choices = _each(options, len(questions), "option lists")
    parts = [(question, format_options(opts) if opts else None)
             for question, opts in zip(questions, choices, strict=True)]
    return _solve(components, "vqa", parts, images, _settings(top_k, top_p, temperature), seed, batch_size,
                  task_tokens)


def answer(components: Components, image: ImageInput, question: str, options: Sequence[str] | None = None,
           **kwargs) -> str:
    """Answer a question about a picture (visual QA), e.g. «сколько здесь калорий?».

    Args:
        components: model, tokenizer and VQGAN (`load_components`; `2.7B_fbc2` was trained for this).
        image: a path, PIL image or (3, H, W) tensor in [0, 1].
        question: the question, in Russian.
        options: answer options; they go in as «a) ...; b) ...» and the model names one.
        **kwargs: top_k, top_p, temperature (defaults: the baseline's 32 / 0.8 / 1.0), seed (43; None: random),
            batch_size, task_tokens (the task's own tokens instead of the baseline's UNKs), as in `answer_batch`.

    Returns:
        The answer text ("" when the model ends it at once).
    """
    return answer_batch(components, [image], [question], [options], **kwargs)[0]


@in_eval_mode
def answer_text_batch(components: Components, questions: Sequence[str], contexts: Sequence[str | None] | None = None,
                      options: Sequence[Sequence[str] | None] | None = None, *, task: str | None = None,
                      top_k: int = ANSWER_SAMPLING.top_k, top_p: float = ANSWER_SAMPLING.top_p,
                      temperature: float = ANSWER_SAMPLING.temperature, seed: int | None = _SEED,
                      batch_size: int = 16, task_tokens: bool = False) -> list[str]:
    """Answer questions about texts (text QA) or math problems (math QA); see `answer_text`.

    All inputs of one call are one task: `task`, or text QA when any context is given, else math QA.
    """
    contexts = _each(contexts, len(questions), "contexts")
    choices = _each(options, len(questions), "option lists")
    task = task or ("textqa" if any(contexts) else "mathqa")
    parts = [(context, question, format_options(opts) if opts else None)
             for context, question, opts in zip(contexts, questions, choices, strict=True)]
    return _solve(components, task, parts, None, _settings(top_k, top_p, temperature), seed, batch_size, task_tokens)


def answer_text(components: Components, question: str, context: str | None = None,
                options: Sequence[str] | None = None, **kwargs) -> str:
    """Answer a question about a text (text QA), or solve a math problem (math QA: no context).

    Args:
        components: model, tokenizer and VQGAN (`load_components`).
        question: the question, or the math problem («6 умножить на y - 54 это -72, для y.»).
        context: the text the answer is in; None for math QA.
        options: answer options («a) ...; b) ...»).
        **kwargs: task ("textqa" or "mathqa", to choose yourself) and the sampling options of `answer`.

    Returns:
        The answer text.
    """
    return answer_text_batch(components, [question], [context], [options], **kwargs)[0]


@in_eval_mode
def read_text_batch(components: Components, images: Sequence[ImageInput], *, top_k: int = ANSWER_SAMPLING.top_k,
                    top_p: float = ANSWER_SAMPLING.top_p, temperature: float = ANSWER_SAMPLING.temperature,
                    seed: int | None = _SEED, batch_size: int = 16, task_tokens: bool = False) -> list[str]:
    """The text written in each image (text recognition); see `read_text`."""
    return _solve(components, "text_recognition", [()] * len(images), images, _settings(top_k, top_p, temperature),
                  seed, batch_size, task_tokens)


def read_text(components: Components, image: ImageInput, **kwargs) -> str:
    """Read the text written in a picture (a sign, a label): the FBC2 text-recognition task.

    Args:
        components: model, tokenizer and VQGAN.
        image: a path, PIL image or (3, H, W) tensor in [0, 1].
        **kwargs: the sampling options of `answer`.
    """
    return read_text_batch(components, [image], **kwargs)[0]


@in_eval_mode
def continue_text_batch(components: Components, texts: Sequence[str], *, top_k: int = ANSWER_SAMPLING.top_k,
                        top_p: float = ANSWER_SAMPLING.top_p, temperature: float = ANSWER_SAMPLING.temperature,
                        seed: int | None = _SEED, batch_size: int = 16) -> list[str]:
    """Continue each text (T2T, in the left-text positions); texts of equal token length share batches."""
    model, layout = components.model, TaskLayout(components.model.config, components.tokenizer)
    prompter = Prompter(model.config, components.tokenizer, "rc10")
    prompts = [layout.continuation_prompt(text) for text in texts]
    results: list[str] = [""] * len(texts)
    for length in sorted({len(prompt) for prompt in prompts}):
        indices = [i for i, prompt in enumerate(prompts) if len(prompt) == length]
        batch = torch.stack([prompts[i] for i in indices]).to(components.device)
        ids = sample_text_ids(model, batch, model.config.l_text_seq_length - length,
                              _settings(top_k, top_p, temperature), prompter=prompter, seed=seed,
                              batch_size=batch_size)
        for i, row in zip(indices, ids, strict=True):
            results[i] = prompter.decode(torch.cat([prompts[i], row]))
    return results


def continue_text(components: Components, text: str, **kwargs) -> str:
    """Continue a text (the T2T task, rc10's `generate_texts`): the text and its continuation, as one string.

    Args:
        components: model, tokenizer and VQGAN.
        text: the start, e.g. «борщ варят из».
        **kwargs: top_k, top_p, temperature, seed, batch_size (see `answer`).
    """
    return continue_text_batch(components, [text], **kwargs)[0]
