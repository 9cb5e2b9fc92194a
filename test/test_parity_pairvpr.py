"""Pair-VPR ViT-B reproduces the official global descriptor, dense features and pair logits.

Fixture: shared/parity/pairvpr_vitb. The ~200M-parameter model is built and loaded once per module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from parity import assert_case_outputs, load_fixture, save_official_checkpoint
from vpr_ros.models.pairvpr import rebuild_dec_pos_embed_cls, sincos_pos_embed_2d
from vpr_ros.weights import load_model


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "pairvpr_vitb"


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    return load_fixture(fixture_dir)


@pytest.fixture(scope="module")
def model(fixture, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairvpr")
    path = save_official_checkpoint(fixture, folder)
    model, _ = load_model("pairvpr", weights=path)
    path.unlink()  # 811 MB; the model holds its own copy now
    assert not model.training
    return model


def _case(fixture, name):
    return next(c for c in fixture["cases"] if c["name"] == name)


def _load(fixture_dir, file_name):
    return torch.from_numpy(np.load(fixture_dir / file_name))


def test_fixture_cases_are_all_covered(fixture):
    assert {c["name"] for c in fixture["cases"]} == {"global_a", "global_b", "pair"}


@pytest.mark.parametrize("name", ["global_a", "global_b"])
def test_global_and_dense_match_official(model, fixture, fixture_dir, name):
    case = _case(fixture, name)
    with torch.inference_mode():
        out = model.extract(_load(fixture_dir, case["inputs"]["img"]))
    assert_case_outputs(fixture_dir, case, {"global": out["global"].numpy(), "dense": out["dense"].numpy()})


def test_pair_logits_match_official(model, fixture, fixture_dir):
    case = _case(fixture, "pair")
    # The stored dense outputs are the inputs, as in the fixture's run.
    a, b = (_load(fixture_dir, case["inputs"][k]) for k in ("dense_a", "dense_b"))
    with torch.inference_mode():
        # The three pairs as one batch, the way the re-ranker scores candidates.
        logits = model.pair_logits(torch.cat([a, b, a]), torch.cat([b, a, a])).numpy()
        dec_cls = model.decode(torch.cat([a, b]), torch.cat([b, a]))[:, 0].numpy()
    actual = {
        "logit_ab": logits[0:1, None],
        "logit_ba": logits[1:2, None],
        "logit_aa": logits[2:3, None],
        "dec_cls_ab": dec_cls[0:1],
        "dec_cls_ba": dec_cls[1:2],
    }
    assert_case_outputs(fixture_dir, case, actual)


def test_batched_re_rank_score_is_the_sum_of_both_orders(model, fixture, fixture_dir):
    case = _case(fixture, "pair")
    a, b = (_load(fixture_dir, case["inputs"][k]) for k in ("dense_a", "dense_b"))
    logit = {k: np.load(fixture_dir / f).item() for k, f in case["outputs"].items() if k.startswith("logit")}
    with torch.inference_mode():
        # One query (batch 1) against two candidates: exercises both broadcasting directions.
        score = model.pair_score(a, torch.cat([b, a]))
    want = torch.tensor([logit["logit_ab"] + logit["logit_ba"], 2 * logit["logit_aa"]])
    torch.testing.assert_close(score, want, atol=2 * case["atol"]["logit_ab"], rtol=case["rtol"]["logit_ab"])


def test_decoder_pos_embed_is_mae_sincos_column_half_first():
    dim, grid = 768, 23
    table = sincos_pos_embed_2d(dim, grid)
    assert table.shape == (grid * grid, dim)
    quarter = dim // 4
    for row, col in [(0, 0), (0, 5), (7, 0), (22, 13)]:
        token = table[row * grid + col].double()
        for k in (0, 1, 50, quarter - 1):
            w = 10000.0 ** (-k / quarter)
            want = [math.sin(col * w), math.cos(col * w), math.sin(row * w), math.cos(row * w)]
            got = [token[k], token[quarter + k], token[2 * quarter + k], token[3 * quarter + k]]
            assert [float(g) for g in got] == pytest.approx(want, abs=1e-6)


def test_load_time_rebuild_replaces_the_files_cls_table(model, fixture):
    # The fixture's file holds a random dec_pos_embed_cls; the loaded model must not use it.
    loaded = model.state_dict()
    want = torch.cat([torch.zeros(1, 768), loaded["dec_pos_embed"]])
    torch.testing.assert_close(loaded["dec_pos_embed_cls"], want, rtol=0, atol=0)


def test_file_without_pos_buffers_gets_the_official_sincos():
    filled = rebuild_dec_pos_embed_cls({"decoder_embed.weight": torch.zeros(768, 1024)})
    table = sincos_pos_embed_2d(768, 23)
    torch.testing.assert_close(filled["dec_pos_embed"], table, rtol=0, atol=0)
    want_cls = torch.cat([torch.zeros(1, 768), table])
    torch.testing.assert_close(filled["dec_pos_embed_cls"], want_cls, rtol=0, atol=0)
