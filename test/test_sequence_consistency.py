"""consistency_mode "sequence": a run of queries matching a run of map keyframes in order."""

from __future__ import annotations

import pytest

from vpr_ros.config import PipelineConfig
from vpr_ros.loop_closure import LoopClosureDecider
from vpr_ros.pipeline import build_decider
from vpr_ros.types import Candidate, LoopStatus, Verification


def _v(match_id, score=50.0):
    return Verification(Candidate(match_id, float(match_id), 0.9), score, int(score), True, "test")


def _seq(**kw):
    return LoopClosureDecider(mode="sequence", **{"sequence_length": 3, "id_tolerance": 1, **kw})


def _statuses(decider, pairs):
    return [decider.decide(q, q, [_v(m) for m in ms]).status for q, ms in pairs]


def test_a_consistent_run_is_accepted_and_its_earlier_queries_confirmed():
    dec = _seq()
    assert _statuses(dec, [(100, [10]), (101, [11])]) == [LoopStatus.FAILED_CONSISTENCY] * 2
    d = dec.decide(102, 102, [_v(12)])
    assert d.accepted and d.best.candidate.id == 12 and "run of 3" in d.reason
    assert [(c.query_id, c.best.candidate.id) for c in d.confirmed] == [(100, 10), (101, 11)]
    later = dec.decide(103, 103, [_v(13)])
    assert later.accepted and later.confirmed == []  # 100-102 were reported already


def test_an_aliased_single_match_is_rejected_where_neighbours_accept_it():
    # A look-alike place matches two queries in a row, then the matches go elsewhere.
    pairs = [(100, [50]), (101, [51]), (102, [7]), (103, [90])]
    neighbours = LoopClosureDecider(consistency=2, id_tolerance=1)
    assert LoopStatus.ACCEPTED in _statuses(neighbours, pairs)
    assert LoopStatus.ACCEPTED not in _statuses(_seq(), pairs)


def test_matches_must_go_forward_at_a_steady_offset():
    # Backwards (a reverse traversal, or two look-alikes in turn): neighbours would accept.
    assert LoopStatus.ACCEPTED not in _statuses(_seq(), [(100, [12]), (101, [11]), (102, [10])])
    # Jumps beyond the tolerance: 10, 14, 18 for queries one apart.
    assert LoopStatus.ACCEPTED not in _statuses(_seq(), [(100, [10]), (101, [14]), (102, [18])])
    # A slower revisit (the same match twice) and a skipped query (gap 2, match step 2) are fine.
    assert _statuses(_seq(), [(100, [10]), (101, [10]), (103, [12])])[-1] == LoopStatus.ACCEPTED


def test_support_from_any_passed_candidate_and_gaps_within_max_query_gap():
    dec = _seq(max_query_gap=2)
    dec.decide(100, 100, [_v(70, 80), _v(10, 40)])  # second-best hypothesis starts the run
    dec.decide(101, 101, [_v(11)])
    d = dec.decide(102, 102, [_v(33, 90), _v(12, 30)])
    assert d.accepted and d.best.candidate.id == 12  # the candidate that completes a run wins
    gapped = _statuses(_seq(max_query_gap=2), [(100, [10]), (103, [13]), (104, [14])])
    assert gapped[-1] != LoopStatus.ACCEPTED  # 100 -> 103 is too far back: a run of 2


def test_strong_scores_length_one_and_bad_modes():
    assert _seq(accept_score=100).decide(1, 1, [_v(0, 150)]).accepted
    assert _seq(sequence_length=1).decide(1, 1, [_v(0)]).accepted
    with pytest.raises(ValueError, match="consistency mode"):
        LoopClosureDecider(mode="sequences")
    with pytest.raises(ValueError):
        _seq(sequence_length=0)
    with pytest.raises(ValueError, match="one of neighbours, sequence"):
        PipelineConfig.from_dict({"consistency_mode": "seq"})


def test_config_selects_the_mode():
    dec = build_decider(PipelineConfig(consistency_mode="sequence", sequence_length=5))
    assert (dec.mode, dec.sequence_length) == ("sequence", 5)
    assert build_decider(PipelineConfig()).mode == "neighbours"  # today's behaviour by default
