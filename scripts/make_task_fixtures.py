"""Build FBC2 task rows with the PUBLIC FBC2 BASELINE's logic; save them as the fixture `tests/test_tasks.py` reads.

Runs inside the reference env only (`scripts/make-reference-env.sh`: youtokentome and rudalle's tokenizer wrapper),
never imports rudolph_ft:

    .venv-ref/bin/python scripts/make_task_fixtures.py --out tests/assets/tasks

The baseline (GitHub `ai-forever/fbc2_aij2022` at ec99261) is no package; the parts that lay out token rows are
transcribed below as they are there, images left out:

- training: `src/train/utils.py::create_dataset` (text parts joined by spaces) and
  `src/train/dataloader.py::DatasetRetriever.__getitem__` / `encode_text` (task tokens after bos, dropped to the
  side's UNK by `random.choices(..., weights=[0.75, 0.25])`, seeded here with `random.seed`);
- inference: `src/inference/utils.py::create_dataset` (parts + ' '), `src/inference/dataloader.py` (`<LT_UNK>`),
  `src/inference/inference_api.py::generate_tokens` (the answer start from an empty template, `<RT_UNK>`), and
  `generate_texts`' template for text continuation, with `add_special_token=True` (rc10's layout; the baseline's
  own call passes False, see rudolph_ft/tasks.py).

- answers: `inference_api.py::generate_tokens` (greedy, top_k=1, over `allowed_token_ids` = the BPE ids as
  `src/inference/inference.py::run_inference` passes them) run on rc10's `ruDolphModel` (the class the baseline
  vendors as `src/rudolph/model/model.py`) with the shared deterministic weights (`tests/parity_weights.py`) and
  fixed image codes in place of the VQGAN, for the image tasks' prompts.

Token ids: the baseline's `DEFAULT_SPC_TOKENS` moved from 16384 to the test tokenizer's vocabulary size (the same
layout relative to the vocabulary). Text: `tests/assets/tokenizer/yttm-captions/bpe.model` through rudalle's
`YTTMTokenizerWrapper` (its `prepare_tokens` cuts and pads).
"""

import argparse
import importlib.util
import json
import random
from pathlib import Path

import torch
import transformers
import youtokentome as yttm
from rudalle.tokenizer import YTTMTokenizerWrapper
from rudolph.model import ruDolphModel

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE.parent / "tests" / "assets" / "tokenizer" / "yttm-captions" / "bpe.model"
L_TEXT, R_TEXT, SEED = 24, 12, 0
_spec = importlib.util.spec_from_file_location("parity_weights", HERE.parent / "tests" / "parity_weights.py")
parity_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity_weights)
# the tiny `2.7B_fbc2`-shaped model of tests/test_tasks.py (vocab_size: + the BPE vocabulary, set in main)
MODEL_PARAMS = dict(num_layers=2, hidden_size=32, num_attention_heads=4, l_text_seq_length=L_TEXT,
                    r_text_seq_length=R_TEXT, image_tokens_per_dim=8, kernel_size=3, last_kernel_size=5,
                    text_special_tokens=32, image_special_tokens=8, image_vocab_size=512, embedding_dropout_prob=0.1,
                    attention_dropout_prob=0.1, output_dropout_prob=0.1, cogview_sandwich_layernorm=True,
                    cogview_pb_relax=True)
WEIGHTS_SEED = 20221101

BASELINE_SPC_TOKENS = {
    '<LT_UNK>': 16384, '<RT_UNK>': 16385, '<LT_T2I>': 16386, '<LT_I2T>': 16387, '<LT_T2T>': 16388, '<RT_I2T>': 16389,
    '<LT_TQA>': 16390, '<RT_TQA>': 16391, '<LT_MQA>': 16392, '<RT_MQA>': 16393, '<LT_VQA>': 16394, '<RT_VQA>': 16395,
    '<LT_CAP>': 16396, '<RT_CAP>': 16397, '<LT_GEN>': 16398, '<LT_REC>': 16399, '<RT_REC>': 16400,
}
tokens_mapping = {
    'textqa': ['<LT_TQA>', '<RT_TQA>'],
    'mathqa': ['<LT_MQA>', '<RT_MQA>'],
    'captioning': ['<LT_CAP>', '<RT_CAP>'],
    'generation': ['<LT_GEN>', ],
    'vqa': ['<LT_VQA>', '<RT_VQA>'],
    'text_recognition': ['<LT_REC>', '<RT_REC>']
}
# the challenge's instructions (README, "test data format" of each sub-task)
INSTRUCTIONS = {
    'textqa': 'Определи правильный ответ по тексту.', 'mathqa': None, 'captioning': 'Что представлено на картинке?',
    'generation': 'Сгенерируй изображение по тексту.', 'vqa': 'Ответь на вопрос по картинке.',
    'text_recognition': 'Распознай текст на картинке.',
}
LONG = ("Мужская сборная команда Норвегии по биатлону в рамках этапа Кубка мира выиграла эстафетную гонку. "
        "Вторыми стали французы, а бронзу получила немецкая команда.")
# (task, text parts after the instruction, answer options or None, answer or None)
SAMPLES = [
    ('vqa', ['Какое это блюдо?'], None, 'Борщ'),
    ('vqa', ['Сколько здесь ккал?'], ['70', '250', '300'], 'a) 70'),
    ('textqa', [LONG, 'Кто выиграл эстафету?'], None, 'сборная Норвегии'),
    ('textqa', ['борщ: белков 3,5 г; ккал 70.', '  Сколько белков в 100 г борща? '], ['3,5 г', '12 г'], 'a'),
    ('mathqa', ['Решите линейное уравнение. 6 умножить на y - 54 это -72, для y.'], ['-4', '-3'], 'b) -3'),
    ('captioning', [], None, 'Тарелка борща со сметаной'),
    ('generation', ['Плов с мясом'], None, None),
    ('text_recognition', [], None, 'ШАУРМА 24 часа'),
    ('vqa', [LONG], None, LONG),  # both texts cut
]
CONTINUATIONS = ['Борщ варят из', 'плов', '', LONG]


def options_text(options):
    return '; '.join(f'{letter}) {option}' for letter, option in zip('abcdefgh', options, strict=False))


class BaselineTexts:
    """The text half of `src/train/dataloader.py::DatasetRetriever` and the inference code around it."""

    spc_id = -1

    def __init__(self, tokenizer, spc_tokens):
        self.tokenizer = tokenizer
        self.spc_tokens = spc_tokens
        self.tokens_mapping = tokens_mapping

    def encode_text(self, text, text_seq_length, add_special=True):
        tokens = self.tokenizer.tokenizer.encode([text], output_type=yttm.OutputType.ID)[0]
        bos = [self.tokenizer.bos_id]
        if add_special:
            bos.append(self.spc_id)
        tokens = bos + tokens + [self.tokenizer.eos_id]
        return self.tokenizer.prepare_tokens(tokens, text_seq_length)

    def train_item(self, task_id, left_text, right_text):  # DatasetRetriever.__getitem__ without the image
        left_text = left_text.lower().strip()
        left_encoded_text = self.encode_text(left_text, text_seq_length=L_TEXT)
        left_special_token = random.choices([self.tokens_mapping[task_id][0], '<LT_UNK>'], weights=[0.75, 0.25])[0]
        left_encoded_text[torch.where(left_encoded_text == self.spc_id)] = self.spc_tokens[left_special_token]
        if right_text:
            right_text = right_text.lower().strip()
            right_encoded_text = self.encode_text(right_text, text_seq_length=R_TEXT)
            right_special_token = random.choices([self.tokens_mapping[task_id][1], '<RT_UNK>'],
                                                 weights=[0.75, 0.25])[0]
            right_encoded_text[torch.where(right_encoded_text == self.spc_id)] = self.spc_tokens[right_special_token]
        else:
            right_encoded_text = torch.zeros((R_TEXT), dtype=torch.int32)
        return left_encoded_text, right_encoded_text

    def inference_left(self, left_text):  # src/inference/dataloader.py DatasetRetriever.__getitem__
        left_special_token = '<LT_UNK>'
        left_text = left_text.lower().strip()
        left_encoded_text = self.encode_text(left_text, text_seq_length=L_TEXT)
        left_encoded_text[torch.where(left_encoded_text == self.spc_id)] = self.spc_tokens[left_special_token]
        return left_encoded_text

    def answer_start(self, template='', special_token='<RT_UNK>'):  # inference_api.generate_tokens
        template = template.lower().strip()
        template_encoded = self.encode_text(template, text_seq_length=L_TEXT)
        template_size = (template_encoded != 0).sum() - 1  # eos
        template_encoded = template_encoded[:template_size]
        template_encoded[torch.where(template_encoded == self.spc_id)] = self.spc_tokens[special_token]
        return template_encoded

    def continuation(self, template, special_token='<LT_T2T>'):  # inference_api.generate_texts, add_special=True
        template = template.lower().strip()
        template_encoded = self.encode_text(template, text_seq_length=L_TEXT, add_special=True)
        template_size = (template_encoded != 0).sum() - 1  # eos
        template_encoded = template_encoded[:template_size]
        template_encoded[torch.where(template_encoded == self.spc_id)] = self.spc_tokens[special_token]
        return template_encoded


class BaselineApi(BaselineTexts):
    """What `inference_api.py::ruDolphApi.generate_tokens` reads from `self`, for one model and tokenizer (its
    `encode_text` is the dataloader's, `add_special_token` named `add_special`)."""

    def __init__(self, model, tokenizer, spc_tokens):
        super().__init__(tokenizer, spc_tokens)
        self.model = model
        self.vocab_size = self.model.get_param('vocab_size')
        self.l_text_seq_length = self.model.get_param('l_text_seq_length')
        self.r_text_seq_length = self.model.get_param('r_text_seq_length')
        self.image_seq_length = self.model.get_param('image_seq_length')
        self.total_seq_length = self.l_text_seq_length + self.image_seq_length + self.r_text_seq_length
        self.device = 'cpu'

    def get_attention_mask(self, bs):
        return torch.tril(torch.ones((bs, 1, self.total_seq_length, self.total_seq_length), device=self.device))

    def generate_tokens(self, image_tokens, left_text, top_k, top_p, temperature=1.0, use_cache=True, template='',
                        allowed_token_ids=None, special_token='<RT_UNK>'):
        """The baseline's loop (prints and the text decoding left out): the generated right texts after bos."""
        generated_tokens = []
        chunk_bs = left_text.shape[0]
        template = template.lower().strip()
        template_encoded = self.encode_text(template, text_seq_length=self.l_text_seq_length)
        template_size = (template_encoded != 0).sum() - 1  # eos
        template_encoded = template_encoded[:template_size]
        template_encoded[torch.where(template_encoded == self.spc_id)] = self.spc_tokens[special_token]
        with torch.no_grad():
            attention_mask = self.get_attention_mask(chunk_bs)
            out = torch.cat((
                left_text.to(self.device),
                image_tokens,
                template_encoded.repeat(chunk_bs, 1).to(self.device),
            ), dim=1)
            cache = None
            iter_range = range(
                self.l_text_seq_length + self.image_seq_length + template_size,
                self.l_text_seq_length + self.image_seq_length + self.r_text_seq_length
            )
            for _ in iter_range:
                logits, cache = self.model(out, attention_mask, cache=cache, use_cache=use_cache, return_loss=False)
                logits = logits[:, -1, :self.vocab_size]
                if allowed_token_ids:
                    logits = logits[:, allowed_token_ids]
                logits /= temperature
                filtered_logits = transformers.top_k_top_p_filtering(logits, top_k=top_k, top_p=top_p)
                probs = torch.nn.functional.softmax(filtered_logits, dim=-1)
                sample = torch.multinomial(probs, 1)
                if allowed_token_ids:
                    sample = torch.tensor(allowed_token_ids).to(self.device)[sample]
                indexes = torch.where(sample >= self.vocab_size - self.l_text_seq_length)
                sample[indexes] = 3
                out = torch.cat((out, sample), dim=-1)
            generated_tokens.append(out[:, -self.r_text_seq_length:])
        return torch.cat(generated_tokens)[:, 1:]


def greedy_answers(tokenizer, texts, spc_tokens, bpe_vocab):
    """Greedy answers of the baseline's loop to the image tasks' prompts, on deterministic weights and codes."""
    params = {**MODEL_PARAMS, "vocab_size": bpe_vocab + L_TEXT}
    model = ruDolphModel(device="cpu", **params).eval()
    state = model.state_dict()
    model.load_state_dict({**state, **parity_weights.fill_state_dict(state, WEIGHTS_SEED)})
    cases = [(task, parts, options) for task, parts, options, _ in SAMPLES if task in ('vqa', 'text_recognition')]
    left = torch.stack([texts.inference_left(''.join(t + ' ' for t in input_texts(*case))) for case in cases])
    generator = torch.Generator().manual_seed(WEIGHTS_SEED + 1)
    codes = torch.randint(0, params["image_vocab_size"], (len(cases), 64), generator=generator)
    api = BaselineApi(model, tokenizer, spc_tokens)
    generated = api.generate_tokens(codes, left, top_k=1, top_p=0.8, temperature=1.0,
                                    allowed_token_ids=list(range(len(tokenizer.tokenizer.vocab()))))
    return {"params": params, "weights_seed": WEIGHTS_SEED, "left_ids": left.tolist(), "codes": codes.tolist(),
            "answer_ids": generated[:, 1:].tolist()}  # after bos and <RT_UNK>


def input_texts(task, parts, options):
    """The text parts of one challenge input, in the order of its samples: instruction, parts, options."""
    texts = ([INSTRUCTIONS[task]] if INSTRUCTIONS[task] else []) + list(parts)
    return texts + ([options_text(options)] if options else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "tests" / "assets" / "tasks")
    args = parser.parse_args()
    tokenizer = YTTMTokenizerWrapper(yttm.BPE(model=str(TOKENIZER)))
    bpe_vocab = tokenizer.vocab_size()
    spc_tokens = {name: token_id - 16384 + bpe_vocab for name, token_id in BASELINE_SPC_TOKENS.items()}
    texts = BaselineTexts(tokenizer, spc_tokens)

    random.seed(SEED)
    training = []
    for _ in range(4):  # four epochs over the samples: enough draws to see every dropout case
        for task, parts, options, answer in SAMPLES:
            left_text = ' '.join(input_texts(task, parts, options))  # train/utils.py create_dataset
            left, right = texts.train_item(task, left_text, answer)
            training.append({"task": task, "left_text": left_text, "right_text": answer,
                             "left_ids": left.tolist(), "right_ids": right.tolist()})
    inference = []
    for task, parts, options, _ in SAMPLES:
        left_text = ''.join(text + ' ' for text in input_texts(task, parts, options))  # inference/utils.py
        inference.append({"task": task, "parts": parts, "options": options,
                          "left_ids": texts.inference_left(left_text).tolist(),
                          "answer_start": texts.answer_start().tolist()})
    continuation = [{"text": text, "prompt_ids": texts.continuation(text).tolist()} for text in CONTINUATIONS]
    fixture = {
        "made_by": "scripts/make_task_fixtures.py (the FBC2 baseline's layout, youtokentome + rudalle wrapper)",
        "tokenizer": "tests/assets/tokenizer/yttm-captions/bpe.model", "bpe_vocab_size": bpe_vocab,
        "l_text_seq_length": L_TEXT, "r_text_seq_length": R_TEXT, "spc_tokens": spc_tokens,
        "training": {"seed": SEED, "samples": training}, "inference": inference, "continuation": continuation,
        "greedy": greedy_answers(tokenizer, texts, spc_tokens, bpe_vocab),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fbc2_layout.json"
    path.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(training)} training samples, {len(inference)} prompts, {len(continuation)} texts")


if __name__ == "__main__":
    main()
