"""Training examples as tensors: image codes (encoded once) and tokenized captions, batched in a seeded order.

After preparation a step touches no pixels: `[left text zeros | image codes | right text]` is assembled from
in-memory tensors, in an order that depends only on (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

__all__ = ["Examples", "TaskExamples", "batch_order", "balanced_order", "assemble_batch", "assemble_task_batch",
           "task_examples", "without_empty_right_text"]


@dataclass
class Examples:
    """Prepared examples of one split.

    Attributes:
        codes: (N, views, image_seq_length) image codes; view 0 = argmax, others Gumbel-sampled.
        captions: the N caption strings (right text).
        r_text: (N, r_text_seq_length) pre-tokenized captions ([bos] ids [eos] pad).
        meta: per-example metadata (dish name, nutrients, path, key).
    """

    codes: torch.Tensor
    captions: list[str]
    r_text: torch.Tensor
    meta: list[dict]

    def __len__(self) -> int:
        return len(self.captions)


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int, *,
                drop_last: bool = False) -> list[list[int]]:
    """The epoch's batches of example indices: a permutation drawn from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, num_examples, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def assemble_batch(examples: Examples, indices: list[int], *, l_text_seq_length: int, seed: int, step: int,
                   tokenizer=None, bpe_dropout: float = 0.0, text_rng: random.Random | None = None) -> torch.Tensor:
    """(B, S) input ids of the given examples: empty left text, one image-code view each, the caption.

    The view of each example is drawn from (seed, step); BPE dropout (when > 0) re-tokenizes the captions with
    `text_rng`, whose state a checkpoint saves.
    """
    index = torch.tensor(indices, dtype=torch.long)
    views = examples.codes.shape[1]
    if views > 1:
        generator = torch.Generator().manual_seed(seed * 7_919 + step)
        chosen = torch.randint(0, views, (len(indices),), generator=generator)
        codes = examples.codes[index, chosen]
    else:
        codes = examples.codes[index, 0]
    if bpe_dropout > 0 and tokenizer is not None:
        r_text = tokenizer.encode_batch([examples.captions[i] for i in indices], examples.r_text.shape[1],
                                        bpe_dropout=bpe_dropout, rng=text_rng)
    else:
        r_text = examples.r_text[index]
    left = torch.zeros(len(indices), l_text_seq_length, dtype=torch.long)
    return torch.cat([left, codes.long(), r_text.long()], dim=1)


@dataclass
class TaskExamples:
    """The rows of a multitask table, ready to assemble (`assemble_task_batch`).

    Attributes:
        tasks: the N task names (`rudolph_ft.tasks.TASKS`).
        left_texts, right_texts: the N texts; the task-token rows are built per step (token dropout).
        codes: (M, views, image_seq_length) image codes of the table's M distinct images, then one all-zero grid for
            the rows of text tasks (as the FBC2 baseline); view 0 = the photo's argmax codes.
        image_of: (N,) row -> index into `codes`.
        augmented: (N,) bool: whether a row takes a drawn view (its task is in tasks.augment) or always view 0.
    """

    tasks: list[str]
    left_texts: list[str]
    right_texts: list[str]
    codes: torch.Tensor
    image_of: torch.Tensor
    augmented: torch.Tensor

    def __len__(self) -> int:
        return len(self.tasks)

    @classmethod
    def of_rows(cls, tasks: list[str], left_texts: list[str], right_texts: list[str],
                codes: torch.Tensor) -> TaskExamples:
        """Rows with their own (N, image_seq_length) codes, one view each."""
        return cls(tasks, left_texts, right_texts, codes[:, None], torch.arange(len(tasks)),
                   torch.zeros(len(tasks), dtype=torch.bool))

    @property
    def views(self) -> int:
        return self.codes.shape[1]

    def row_codes(self, indices: list[int], *, seed: int | None = None, step: int = 0) -> torch.Tensor:
        """(B, image_seq_length) codes of the rows: view 0, or (seed given) for augmented rows a view drawn from
        (seed, step), as `assemble_batch` draws the captioning rows' views."""
        index = torch.tensor(indices, dtype=torch.long)
        chosen = torch.zeros(len(indices), dtype=torch.long)
        if seed is not None and self.views > 1:
            generator = torch.Generator().manual_seed(seed * 7_919 + step + 3_301)
            drawn = torch.randint(0, self.views, (len(indices),), generator=generator)
            chosen = torch.where(self.augmented[index], drawn, chosen)
        return self.codes[self.image_of[index], chosen]


@torch.inference_mode()
def task_examples(table, vqgan, image_size: int, image_seq_length: int, batch_size: int = 16, *,
                  encode_views: Callable | None = None, augment: Collection[str] = ()) -> TaskExamples:
    """Encode a checked `TaskTable`'s images once (each file once, however many rows ask about it).

    Args:
        encode_views: (images (B, 3, S, S), their paths, their indices in `table.images()`) -> (B, views, h*w)
            codes, the run's views (`prepare.view_encoder`); None: the argmax codes only (one view).
        augment: tasks whose rows take the views; an image only other tasks ask about gets its argmax codes alone
            (stored as every view).
    """
    from ..data.images import load_image, preprocess_image

    paths = table.images()
    viewed = {row.image for row in table.rows if row.image is not None and row.task in augment}
    if encode_views is None:
        viewed = set()
    device = vqgan.encoder_device
    grids: list[torch.Tensor | None] = [None] * len(paths)
    for start in range(0, len(paths), batch_size):
        indices = list(range(start, min(start + batch_size, len(paths))))
        images = torch.stack([preprocess_image(load_image(paths[i], target_size=image_size), image_size)
                              for i in indices]).to(device)
        views = [k for k, i in enumerate(indices) if paths[i] in viewed]
        plain = [k for k, i in enumerate(indices) if paths[i] not in viewed]
        if views:
            chosen = [indices[k] for k in views]
            encoded = encode_views(images[views], [paths[i] for i in chosen], chosen).cpu().long()
            for i, codes in zip(chosen, encoded, strict=True):
                grids[i] = codes
        if plain:
            for k, codes in zip(plain, vqgan.encode(images[plain]).cpu().long(), strict=True):
                grids[indices[k]] = codes[None]
    count = max((g.shape[0] for g in grids), default=1)  # the run's views, or 1 when no row takes them
    zeros = torch.zeros(1, image_seq_length, dtype=torch.long)  # the text tasks' image
    codes = torch.stack([g.expand(count, -1) for g in (*grids, zeros)])
    index_of = {path: i for i, path in enumerate(paths)}
    image_of = torch.tensor([index_of[row.image] if row.image is not None else len(paths) for row in table.rows],
                            dtype=torch.long)
    augmented = torch.tensor([row.task in augment and row.image is not None for row in table.rows], dtype=torch.bool)
    return TaskExamples([row.task for row in table.rows], [row.left_text for row in table.rows],
                        [row.right_text for row in table.rows], codes.clone(), image_of.clone(), augmented.clone())


def balanced_order(task_of: list[str], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """An epoch of as many examples as `task_of` has, drawn with replacement so that every task is equally likely
    (each example with probability 1 / (number of tasks x its task's count)); from (seed, epoch) alone."""
    counts: dict[str, int] = {}
    for name in task_of:
        counts[name] = counts.get(name, 0) + 1
    weights = torch.tensor([1.0 / counts[name] for name in task_of], dtype=torch.double)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 50_021)
    order = torch.multinomial(weights, len(task_of), replacement=True, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def assemble_task_batch(examples: TaskExamples, indices: list[int], layout, *, rng: random.Random,
                        token_dropout: float, seed: int | None = None, step: int = 0) -> torch.Tensor:
    """(B, S) input ids of multitask rows: each row's `Task.training_rows` (task-token dropout drawn from `rng`,
    row by row in `indices` order) around its image codes (view 0, or with `seed` a view drawn from (seed, step)
    for the augmented rows: `TaskExamples.row_codes`)."""
    from ..tasks import get_task

    codes = examples.row_codes(indices, seed=seed, step=step)
    rows = []
    for i, row_codes in zip(indices, codes, strict=True):
        left, right = get_task(examples.tasks[i]).training_rows(
            layout, examples.left_texts[i], examples.right_texts[i], rng=rng, token_dropout=token_dropout)
        rows.append(torch.cat([left, row_codes, right]))
    return torch.stack(rows)


def without_empty_right_text(ids: torch.Tensor, image_end: int) -> torch.Tensor:
    """A task group's (B, S) ids, cut after the image when no row has a right text (generation: the baseline feeds
    [left text | image] only), else as they are."""
    return ids if bool((ids[:, image_end:] != 0).any()) else ids[:, :image_end]
