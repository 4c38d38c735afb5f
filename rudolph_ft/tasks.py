"""Tasks as data: each preset's task tokens, the FBC2 tasks that build training sequences and inference prompts, and
the food task (the article's); each task with its default sampling. The pipelines, the CLI, the web demo, the data
code and the training loop read their defaults here.

- `FOOD` (`NutritionTask`): the schema (`FOOD_SCHEMA`: CSV columns, the caption template `блюдо: {name}; белков:
  {belok}; ...`, nutrients and units), the caption prompt «блюдо:», the parser (`parse`), the metrics (`evaluate`,
  and `evaluate_run`, which a training run calls through `run_task`) and the article's sampling (`CAPTION_SAMPLING`:
  top-k 16, top-p 0.6, temperature 0.8, seed 43, rc4 prompts).
- `TASKS` (`Task`): the FBC2 tasks, sampled as the baseline does (`BASELINE_SAMPLING`), documented below.

This module imports neither torch nor the tokenizer until a prompt is built, so the CLI can read its defaults here.

RuDOLPH-2.7B-FBC2 was fine-tuned on six tasks at once by the public FusionBrain Challenge 2.0 baseline (GitHub
`ai-forever/fbc2_aij2022`, commit ec99261; paths below are in that repository). What it does, and we do:

- Task tokens follow the BPE vocabulary (`DEFAULT_SPC_TOKENS`, `src/train/dataloader.py` l. 12-36 and
  `src/inference/inference_api.py` l. 22-46): the six of rc10 (`<LT_UNK>` 16384 ... `<RT_I2T>` 16389) then eleven
  more (`<LT_TQA>` 16390 ... `<RT_REC>` 16400). Here: `bpe_vocab_size + offset` (`vocab_size - l_text_seq_length`
  is 16384 for every official model), so a tiny model keeps the same layout relative to its vocabulary.
- Tasks and their tokens: `tokens_mapping` (dataloader.py l. 39-46); loss weights left / image / right:
  `trainer.task_weights` of `config/fusion_train.yaml` (text and math QA 1 / 0.01 / 7, generation 1 / 7 / 0.01,
  captioning, VQA, text recognition 1 / 1 / 7).
- A sample's texts are its input's text parts joined by spaces (`src/train/utils.py::create_dataset`,
  `' '.join(left_text)`; at inference `src/inference/utils.py` appends `content + ' '`, stripped later), lower-cased
  and stripped, then `[bos, <task token>] + bpe(text) + [eos]`, cut to the segment length (the eos goes first:
  rudalle's `prepare_tokens`) and padded with 0 (`encode_text` with `spc_id = -1` as the placeholder, dataloader.py
  l. 108-114). A task without a right text (generation) has an all-pad right text (l. 95-96).
- Training replaces each side's task token by that side's UNK with probability 0.25, left and right drawn
  independently by `random.choices([task, UNK], weights=[0.75, 0.25])` (l. 79, 93); the right draw happens only
  when the sample has a right text. `Task.training_rows` draws from a `random.Random` in the same order, so a
  seed reproduces the baseline's choices exactly.
- Inference (`src/inference/dataloader.py` l. 40-44; the empty template of `inference_api.py::generate_tokens`):
  the left text always gets `<LT_UNK>` and the task is told by a Russian instruction among the text parts («Ответь
  на вопрос по картинке.», «Распознай текст на картинке.», ...: the challenge's input format, README), answer
  options as one part «a) ...; b) ...»; the answer starts `[bos, <RT_UNK>]` and is sampled over the BPE ids only
  (`allowed_token_ids` of `src/inference/inference.py::run_inference`: top-k 32, top-p 0.8, temperature 1.0) up to
  its first eos.

Differences we chose:
- `Task.prompt(..., task_tokens=True)` puts the task's own tokens instead of the UNKs (the 75 % case of training;
  the baseline cannot, it is not told the task). The default is the baseline's layout.
- Text-only tasks (text QA, math QA) get image codes 0, as in training (`src/train/trainer.py::get_loss`: no image
  -> zeros); the baseline's `run_inference` first draws an image from the left text (`generate_codebooks` on the
  all-zero picture it feeds) and answers after that image: slower, and not what the model was trained on.
- Text continuation (T2T, `TaskLayout.continuation_prompt`): `[bos, <LT_T2T>] + bpe(text)` as rc10's
  `generate_texts` builds it; the baseline's copy calls `encode_text(..., add_special_token=False)`, so its
  `<LT_T2T>` replacement never happens (`[bos] + bpe(text)`).
- A model whose preset has no FBC2 tokens (the demo, 350M, a fine-tuned model of another preset) gets no task token
  at all: `[bos] + bpe(instruction + text) + [eos]`, the instruction in plain text (pipelines warn once).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import RuDolphConfig

if TYPE_CHECKING:  # torch loads on first use: the CLI reads its defaults here and its --help stays fast
    import torch

    from .tokenizer import Tokenizer

__all__ = [
    "BASE_TASK_TOKENS", "FBC2_TASK_TOKENS", "PRESET_TASK_TOKENS", "TOKEN_DROPOUT", "LossWeights", "Task", "TASKS",
    "TaskLayout", "task_token_ids", "format_options", "get_task",
    "SamplingDefaults", "CAPTION_SAMPLING", "BASELINE_SAMPLING", "Nutrient", "NutritionSchema", "NutritionTask",
    "FOOD_SCHEMA", "FOOD", "run_task",
]

# name -> offset after the BPE vocabulary: the order of each tuple
BASE_TASK_TOKENS = ("<LT_UNK>", "<RT_UNK>", "<LT_T2I>", "<LT_I2T>", "<LT_T2T>", "<RT_I2T>")
FBC2_TASK_TOKENS = BASE_TASK_TOKENS + (
    "<LT_TQA>", "<RT_TQA>", "<LT_MQA>", "<RT_MQA>", "<LT_VQA>", "<RT_VQA>", "<LT_CAP>", "<RT_CAP>", "<LT_GEN>",
    "<LT_REC>", "<RT_REC>",
)
# the task tokens each official preset was trained with (rc10's six for the v2 / 1.3B / 2.7B checkpoints)
PRESET_TASK_TOKENS: dict[str, tuple[str, ...]] = {
    "350M": BASE_TASK_TOKENS, "1.3B": BASE_TASK_TOKENS, "2.7B": BASE_TASK_TOKENS, "2.7B_fbc2": FBC2_TASK_TOKENS,
}
TOKEN_DROPOUT = 0.25  # probability that training replaces a task token by its side's UNK
_UNK = {"left": "<LT_UNK>", "right": "<RT_UNK>"}


def task_token_ids(config: RuDolphConfig) -> dict[str, int]:
    """The task tokens of a model's preset (`config.name`), name -> id; empty for a model without any.

    A config with fewer text special tokens than its preset's table (not an official layout) gets none.
    """
    names = PRESET_TASK_TOKENS.get(config.name or "", ())
    if len(names) > config.text_special_tokens:
        return {}
    first = config.vocab_size - config.l_text_seq_length
    return {name: first + offset for offset, name in enumerate(names)}


def format_options(options: Sequence[str]) -> str:
    """Answer options as the challenge writes them: «a) на 0,3 секунды; b) на секунду; c) на 0,5 секунд»."""
    if len(options) > 26:
        raise ValueError(f"at most 26 answer options (a-z), got {len(options)}")
    return "; ".join(f"{chr(ord('a') + i)}) {option.strip()}" for i, option in enumerate(options))


@dataclass(frozen=True)
class SamplingDefaults:
    """A task's default sampling: what its pipelines, the CLI and the web demo use unless told otherwise.

    Attributes:
        top_k: sample among the k most likely tokens (1: greedy).
        top_p: then among the most likely tokens holding this probability.
        temperature: logits are divided by it first.
        seed: the seed of the local generator (the same seed gives the same output).
        style: prompt and scoring conventions of the caption pipelines ("rc4": the article's; see
            `rudolph_ft.pipelines.prompts`).
    """

    top_k: int
    top_p: float
    temperature: float
    seed: int = 43
    style: str = "rc4"

    def settings(self):
        """The sampler's `SamplingSettings` (top-k, top-p, temperature)."""
        from .pipelines.sampling import SamplingSettings

        return SamplingSettings(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature)


#: the article's caption sampling (`generate_captions`, `predict_nutrition`, the CLI, the web demo, evaluation)
CAPTION_SAMPLING = SamplingDefaults(top_k=16, top_p=0.6, temperature=0.8, seed=43, style="rc4")
#: the FBC2 baseline's answer sampling (`src/inference/inference.py::run_inference`): the FBC2 tasks' default
BASELINE_SAMPLING = SamplingDefaults(top_k=32, top_p=0.8, temperature=1.0, seed=43)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the left-text, image and right-text losses of a task's samples."""

    left: float
    image: float
    right: float


@dataclass(frozen=True)
class TaskLayout:
    """How texts become token rows for one model + tokenizer: the model's task tokens and segment lengths.

    Attributes:
        config: the model's architecture (its `name` picks the task-token table, `task_token_ids`).
        tokenizer: its text tokenizer.
    """

    config: RuDolphConfig
    tokenizer: Tokenizer

    @property
    def token_ids(self) -> dict[str, int]:
        return task_token_ids(self.config)

    @property
    def has_fbc2_tokens(self) -> bool:
        """Whether the model was trained with the FBC2 task tokens (else prompts carry no task token)."""
        return set(FBC2_TASK_TOKENS) <= set(self.token_ids)

    def _ids(self, text: str, token: str | None) -> list[int]:
        from .tokenizer import normalize_text

        tok = self.tokenizer
        head = [tok.bos_id]
        token_id = self.token_ids.get(token) if token is not None and self.has_fbc2_tokens else None
        if token_id is not None:
            head.append(token_id)
        return head + tok.encode(normalize_text(text)) + [tok.eos_id]

    def length(self, text: str, token: str | None = None) -> int:
        """Tokens `encode` would write before cutting: `[bos, token] + bpe(text) + [eos]`."""
        return len(self._ids(text, token))

    def encode(self, text: str, length: int, token: str | None = None) -> torch.Tensor:
        """`[bos, token] + bpe(lower-cased, stripped text) + [eos]`, cut to `length` (the eos goes first), padded
        with 0. `token` is left out when None or when the model lacks it (see `has_fbc2_tokens`).

        Returns:
            (length,) int64 tensor.
        """
        import torch

        ids = self._ids(text, token)[:length]
        return torch.tensor(ids + [self.tokenizer.pad_id] * (length - len(ids)), dtype=torch.long)

    def start(self, token: str | None) -> torch.Tensor:
        """The start of a generated text: `[bos, token]` (or `[bos]` without task tokens). Returns (k,) int64."""
        encoded = self.encode("", self.config.r_text_seq_length, token)
        return encoded[: int((encoded != 0).sum()) - 1]  # without the eos

    def continuation_prompt(self, text: str) -> torch.Tensor:
        """A text to continue in the left-text positions (T2T): `[bos, <LT_T2T>] + bpe(text)`, no eos.

        The base six tokens suffice here (rc10's `generate_texts`); without any, `[bos] + bpe(text)`.
        """
        import torch

        from .tokenizer import normalize_text

        tok = self.tokenizer
        head = [tok.bos_id]
        if "<LT_T2T>" in self.token_ids:
            head.append(self.token_ids["<LT_T2T>"])
        ids = (head + tok.encode(normalize_text(text)))[: self.config.l_text_seq_length - 1]
        return torch.tensor(ids, dtype=torch.long)


@dataclass(frozen=True)
class Task:
    """One FBC2 task: its tokens, loss weights, whether it has an image, and its instruction.

    Attributes:
        name: the baseline's task id ("vqa", "textqa", ...).
        left_token, right_token: task tokens of the left and right text (right None: no right text).
        loss_weights: left-text / image / right-text loss weights.
        has_image: whether a sample has a picture (as input, or as output for generation).
        instruction: the Russian instruction that tells the task at inference (the challenge's inputs).
        sampling: default sampling of its answers (the baseline's, `BASELINE_SAMPLING`).
    """

    name: str
    left_token: str
    right_token: str | None
    loss_weights: LossWeights
    has_image: bool
    instruction: str = ""
    sampling: SamplingDefaults = BASELINE_SAMPLING

    def left_text(self, *parts: str | None) -> str:
        """The instruction and the text parts (empty ones skipped) joined by spaces, as the baseline joins them."""
        return " ".join(part for part in (self.instruction, *parts) if part)

    def training_rows(self, layout: TaskLayout, left_text: str, right_text: str | None = None, *,
                      rng: random.Random, token_dropout: float = TOKEN_DROPOUT) -> tuple[torch.Tensor, torch.Tensor]:
        """The left and right text rows of one training sample (the baseline's `DatasetRetriever.__getitem__`).

        Args:
            layout: the model's `TaskLayout`.
            left_text: the whole left text (instruction and inputs, see `left_text`).
            right_text: the answer; None or "" gives an all-pad right text (generation).
            rng: draws the task-token dropout (left first, then right when there is a right text).
            token_dropout: probability of each side's UNK instead of the task token.

        Returns:
            (l_text_seq_length,) and (r_text_seq_length,) int64 rows.
        """
        cfg = layout.config
        left = layout.encode(left_text, cfg.l_text_seq_length, _drop(self.left_token, "left", rng, token_dropout))
        if not right_text:
            import torch

            return left, torch.zeros(cfg.r_text_seq_length, dtype=torch.long)
        right_token = _drop(self.right_token, "right", rng, token_dropout) if self.right_token else None
        return left, layout.encode(right_text, cfg.r_text_seq_length, right_token)

    def prompt(self, layout: TaskLayout, *parts: str | None,
               task_tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The inference rows: the left text (instruction + `parts`) and the start of the answer.

        Args:
            layout: the model's `TaskLayout`.
            parts: the inputs' texts in order (context, question, formatted options), None/"" skipped.
            task_tokens: the task's own tokens instead of the baseline's `<LT_UNK>` / `<RT_UNK>`.

        Returns:
            (l_text_seq_length,) left row and (k,) answer start (`[bos, <RT_...>]`).
        """
        left_token = self.left_token if task_tokens else _UNK["left"]
        right_token = (self.right_token if task_tokens else None) or _UNK["right"]
        left = layout.encode(self.left_text(*parts), layout.config.l_text_seq_length, left_token)
        return left, layout.start(right_token)


def _drop(token: str, side: str, rng: random.Random, p: float) -> str:
    """`token`, or with probability `p` its side's UNK (one `rng.choices` call, as the baseline draws it)."""
    return rng.choices([token, _UNK[side]], weights=[1 - p, p])[0]


_TEXT_QA, _IMAGE_TEXT, _GENERATION = LossWeights(1, 0.01, 7), LossWeights(1, 1, 7), LossWeights(1, 7, 0.01)
TASKS: dict[str, Task] = {task.name: task for task in (
    Task("textqa", "<LT_TQA>", "<RT_TQA>", _TEXT_QA, False, "Определи правильный ответ по тексту."),
    Task("mathqa", "<LT_MQA>", "<RT_MQA>", _TEXT_QA, False),  # the problem states its own task ("Решите ...")
    Task("captioning", "<LT_CAP>", "<RT_CAP>", _IMAGE_TEXT, True, "Что представлено на картинке?"),
    Task("generation", "<LT_GEN>", None, _GENERATION, True, "Сгенерируй изображение по тексту."),
    Task("vqa", "<LT_VQA>", "<RT_VQA>", _IMAGE_TEXT, True, "Ответь на вопрос по картинке."),
    Task("text_recognition", "<LT_REC>", "<RT_REC>", _IMAGE_TEXT, True, "Распознай текст на картинке."),
)}


def get_task(name: str) -> Task:
    """The task called `name` (see `TASKS`); a KeyError that lists them otherwise."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


# ---- the food task (the article's): captions that name the dish and its nutrients ---------------------------------


@dataclass(frozen=True)
class Nutrient:
    """One nutrient of the food captions.

    Attributes:
        field: its name in predictions and reports ("protein"; `ParsedCaption`, `NutritionPrediction`, eval.json).
        column: its column in the article's CSV ("belok").
        caption_word: its name in a caption ("белков": `блюдо: ...; белков: 3.5; ...`).
        label: its name on screen ("белки").
        unit: its unit ("g", "kcal"; grams per 100 g in the article's data).
        words: prefixes of the words a parsed caption may name it by (Russian as in the captions, and English).
    """

    field: str
    column: str
    caption_word: str
    label: str
    unit: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class NutritionSchema:
    """The article's food data and captions: the CSV's columns, the caption template, the nutrients and units.

    Attributes:
        nutrients: in caption (and CSV) order.
        dish_column: the CSV column naming the dish; dish_word: its name in a caption; dish_words: prefixes a parsed
            caption may name it by.
        index_column, image_column: the CSV's first column and its image path column.
    """

    nutrients: tuple[Nutrient, ...]
    dish_column: str = "name"
    dish_word: str = "блюдо"
    dish_words: tuple[str, ...] = ("блюд", "dish", "name", "назв")
    index_column: str = "index"
    image_column: str = "path"

    @property
    def template(self) -> str:
        """The caption template, `блюдо: {name}; белков: {belok}; жиров: {fats}; углеводов: {uglevod}; ккал: {kkal};`"""
        fields = [(self.dish_word, self.dish_column)] + [(n.caption_word, n.column) for n in self.nutrients]
        return " ".join(f"{word}: {{{column}}};" for word, column in fields)

    @property
    def columns(self) -> tuple[str, ...]:
        """The article's CSV columns in order: `index, belok, fats, uglevod, kkal, name, path`."""
        return (self.index_column, *self.nutrient_columns, self.dish_column, self.image_column)

    @property
    def nutrient_columns(self) -> tuple[str, ...]:
        """The CSV's nutrient columns (`belok, fats, uglevod, kkal`)."""
        return tuple(n.column for n in self.nutrients)

    @property
    def fields(self) -> tuple[str, ...]:
        """The nutrients' prediction fields in caption order (`protein, fat, carbs, kcal`)."""
        return tuple(n.field for n in self.nutrients)

    def nutrient(self, field: str) -> Nutrient:
        """The nutrient whose prediction field is `field`."""
        return next(n for n in self.nutrients if n.field == field)

    def field_words(self) -> dict[str, tuple[str, ...]]:
        """Prediction field -> word prefixes naming it, the dish first (what `parse_caption` recognises)."""
        return {"dish": self.dish_words, **{n.field: n.words for n in self.nutrients}}

    def caption(self, dish: str, **values: float) -> str:
        """The caption of these values (lower-cased), numbers written with `:g`, e.g.
        `caption("борщ", protein=3.5, fat=4, carbs=6, kcal=70)`."""
        row = {self.dish_column: dish, **{n.column: f"{values[n.field]:g}" for n in self.nutrients}}
        return self.template.format_map(row).lower()


FOOD_SCHEMA = NutritionSchema(nutrients=(
    Nutrient("protein", "belok", "белков", "белки", "g", ("бел", "protein")),
    Nutrient("fat", "fats", "жиров", "жиры", "g", ("жир", "fat")),
    Nutrient("carbs", "uglevod", "углеводов", "углеводы", "g", ("углев", "carb")),
    Nutrient("kcal", "kkal", "ккал", "ккал", "kcal", ("ккал", "калор", "энерг", "kcal", "calor", "energy")),
))


@dataclass(frozen=True)
class NutritionTask:
    """The article's task: caption a food photo with its dish and nutrients, read them back, score them.

    Training uses the single-task layout (an empty left text and the caption as right text, with
    `train.loss_weights`); inference samples continuations of `prompt`, reranks them by the photo, parses the best
    ones and agrees on one answer (`predict`); evaluation compares that answer with the labels (`evaluate`, and
    `evaluate_run` inside a training run). The implementations live in `rudolph_ft.pipelines.nutrition` (parser),
    `rudolph_ft.pipelines.predict` and `rudolph_ft.train.evaluate` (metrics); their defaults come from here.

    Attributes:
        name: the task's name.
        schema: the data's columns, the caption template, the nutrients and their units.
        prompt: the start of every sampled caption (`--template`, `eval.template`).
        class_template: a class name's caption for zero-shot classification ({} = the class).
        sampling: default caption sampling (top-k, top-p, temperature, seed, style).
        captions_per_photo: captions sampled per photo for a prediction; best: the best-ranked ones it is read from.
        metric_fields: the nutrients in the order the evaluation reports them (kcal, the headline, first).
    """

    name: str
    schema: NutritionSchema
    prompt: str
    class_template: str
    sampling: SamplingDefaults = CAPTION_SAMPLING
    captions_per_photo: int = 16
    best: int = 4
    metric_fields: tuple[str, ...] = ("kcal", "protein", "fat", "carbs")

    @property
    def metric_columns(self) -> dict[str, str]:
        """Prediction field -> label column, in report order (`{"kcal": "kkal", "protein": "belok", ...}`)."""
        return {name: self.schema.nutrient(name).column for name in self.metric_fields}

    def parse(self, text: str):
        """What one caption says (`rudolph_ft.pipelines.nutrition.parse_caption`): a `ParsedCaption`."""
        from .pipelines.nutrition import parse_caption

        return parse_caption(text)

    def predict(self, components, images: Sequence, **options) -> list:
        """Dish and nutrients of each photo (`predict_nutrition_batch`): a `NutritionPrediction` each."""
        from .pipelines.predict import predict_nutrition_batch

        return predict_nutrition_batch(components, images, **options)

    def evaluate(self, components, images: Sequence, metas: Sequence[dict], **options) -> dict:
        """Dish accuracy and nutrient errors on labelled photos next to the baseline (`evaluate_predictions`)."""
        from .train.evaluate import evaluate_predictions

        return evaluate_predictions(components, images, metas, **options)

    def evaluate_run(self, trainer: Any, final: bool) -> dict:
        """A training run's evaluation (`evaluate_during_training`): validation loss, sampled captions each
        `eval.every` steps, and at the end the metrics of `evaluate` on the validation split."""
        from .train.evaluate import evaluate_during_training

        return evaluate_during_training(trainer, final=final)

    def format_report(self, report: dict) -> str:
        """`evaluate`'s report as a table (`format_report`)."""
        from .train.evaluate import format_report

        return format_report(report)


FOOD = NutritionTask("food", FOOD_SCHEMA, prompt=f"{FOOD_SCHEMA.dish_word}:",
                     class_template=f"{FOOD_SCHEMA.dish_word}: {{}};")


def run_task(config: Any = None) -> NutritionTask:
    """The task a training run's `data.path` rows teach and its evaluation scores: the food task for every run
    configuration (a multitask run's `tasks.path` rows train beside them, see `TasksSection`)."""
    return FOOD
