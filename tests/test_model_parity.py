"""rudolph_ft.RuDolph against the original `rudolph` (rc10 and rc4): logits and segment losses within 1e-5 of their
magnitude (`numerics.PARITY_REL`; float32 summation-order differences are ~5e-7 of it).

The default run compares with fixtures the reference env computed (`scripts/make_model_fixtures.py`);
`pytest -m reference` with RUDOLPH_REF_PYTHON[_RC4] set recomputes them live with another seed.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASSETS, reference_python
from numerics import PARITY_REL, assert_close_scaled, assert_scalar_close, longest_sum
from parity_weights import fill_state_dict

from rudolph_ft.config import RuDolphConfig
from rudolph_ft.model import model_from_state_dict
from rudolph_ft.model.loading import REFERENCE_MASK_KEYS

FIXTURES = sorted((ASSETS / "model_parity").glob("*.pt"))
SCRIPT = Path(__file__).parents[1] / "scripts" / "make_model_fixtures.py"


def unpack(packed: dict) -> torch.Tensor:
    count = int(np.prod(packed["shape"]))
    bits = np.unpackbits(packed["bits"].numpy())[:count]
    return torch.from_numpy(bits.reshape(packed["shape"]).astype(bool))


def reference_state_dict(fixture: dict) -> dict:
    """What the reference's `state_dict()` held: the shared deterministic weights plus its mask buffers."""
    shapes = {k: torch.empty(v) for k, v in fixture["state_shapes"].items()}
    state = fill_state_dict(shapes, fixture["seed"])
    state.update({k: unpack(v).float() for k, v in fixture["masks"].items()})
    assert set(state) == set(fixture["state_shapes"])
    return state


def fixture_config(fixture: dict) -> RuDolphConfig:
    # the reference's defaults where a case left them out (rc4 has no special-token arguments at all)
    return RuDolphConfig(**{"text_special_tokens": 0, "image_special_tokens": 0, **fixture["params"]})


def our_model(fixture: dict):
    return model_from_state_dict(fixture_config(fixture), reference_state_dict(fixture)).eval()


def check_fixture(fixture: dict) -> None:
    model = our_model(fixture)
    version = fixture["version"]
    # rc10's masks let the right text see the left text, rc4's do not: detected from the buffers
    assert model.config.r_text_sees_l_text == (version == "rc10")
    input_ids = fixture["input_ids"]
    reduction, parity = longest_sum(model.config), {"max_relative": PARITY_REL}
    attention_mask = unpack(fixture["attention_mask"])  # (B, 1, S, S), the reference's
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
        # rows with nothing to attend to (rc4 padding rows) differ by design: the reference spreads them
        # uniformly over every position, we let them see themselves; they are never scored
        scored = attention_mask[:, 0].any(-1)  # (B, S)
        assert scored.sum() > 0
        assert_close_scaled(logits[scored], fixture["logits"][scored], reduction=reduction, **parity, msg="logits")
        for expected in fixture["losses"]:
            out = model(input_ids, attention_mask=attention_mask, loss_weights=tuple(expected["weights"]),
                        loss_slicing=version)
            for name in ("loss", "l_text_loss", "image_loss", "r_text_loss"):
                assert_scalar_close(getattr(out, name), expected[name], reduction=reduction, **parity,
                                    msg=f"{name} {expected}")
        if fixture["partial_loss"] is not None:
            prefix = input_ids[:, : model.config.l_text_seq_length + model.config.image_seq_length]
            out = model(prefix, loss_weights=(0.01, 1, 7))
            assert out.r_text_loss is None
            for name in ("loss", "l_text_loss", "image_loss"):
                assert_scalar_close(getattr(out, name), fixture["partial_loss"][name], reduction=reduction, **parity,
                                    msg=name)


def test_fixtures_cover_both_versions_and_every_mask_kind():
    loaded = [torch.load(path, weights_only=True) for path in FIXTURES]
    assert {f["version"] for f in loaded} == {"rc10", "rc4"}
    assert any(f["params"]["l_text_seq_length"] != f["params"]["r_text_seq_length"] for f in loaded)
    assert any(f["params"].get("text_special_tokens") for f in loaded)
    assert all(f["params"]["num_layers"] >= 6 for f in loaded)
    assert any((f["input_ids"][:, -f["params"]["r_text_seq_length"]:] == 0).any() for f in loaded)  # padding


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_reference_fixture(path):
    check_fixture(torch.load(path, weights_only=True))


def test_mask_buffers_are_the_only_keys_dropped():
    fixture = torch.load(FIXTURES[0], weights_only=True)
    state = reference_state_dict(fixture)
    model = our_model(fixture)
    ours = set(model.state_dict())
    assert set(state) - ours == set(REFERENCE_MASK_KEYS)
    assert ours <= set(state)


def test_unknown_masks_are_rejected():
    fixture = torch.load(FIXTURES[0], weights_only=True)
    state = reference_state_dict(fixture)
    state["transformer.row_mask"] = torch.ones_like(state["transformer.row_mask"])
    with pytest.raises(ValueError, match="masks match no RuDOLPH layout"):
        model_from_state_dict(fixture_config(fixture), state)


@pytest.mark.reference
@pytest.mark.parametrize("version", ["rc10", "rc4"])
def test_matches_reference_live(tmp_path, version):
    python = reference_python(version)
    subprocess.run([python, str(SCRIPT), "--out", str(tmp_path), "--seed", "7"], check=True)
    paths = sorted(tmp_path.glob(f"*-{version}.pt"))
    assert paths
    for path in paths:
        check_fixture(torch.load(path, weights_only=True))
