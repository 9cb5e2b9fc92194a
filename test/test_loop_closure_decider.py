import pytest

from vpr_ros.loop_closure import LoopClosureDecider
from vpr_ros.types import Candidate, LoopStatus, Verification


def _v(match_id, score=50.0, similarity=0.9, passed=True):
    return Verification(Candidate(match_id, float(match_id), similarity), score, int(score), passed, "test")


def test_no_candidates():
    d = LoopClosureDecider().decide(5, 5.0, [])
    assert d.status == LoopStatus.NO_CANDIDATES and d.best is None


def test_low_similarity_and_failed_verification():
    dec = LoopClosureDecider(min_similarity=0.8)
    assert dec.decide(1, 1.0, [_v(0, similarity=0.5)]).status == LoopStatus.LOW_SIMILARITY
    d = dec.decide(2, 2.0, [_v(0, passed=False)])
    assert d.status == LoopStatus.FAILED_VERIFICATION and d.reason == "test"
    dec = LoopClosureDecider(min_score=60)
    assert dec.decide(1, 1.0, [_v(0, score=50)]).status == LoopStatus.FAILED_VERIFICATION


def test_temporal_consistency_needs_agreeing_consecutive_queries():
    dec = LoopClosureDecider(consistency=3, id_tolerance=2, max_query_gap=2)
    assert dec.decide(100, 100.0, [_v(10)]).status == LoopStatus.FAILED_CONSISTENCY
    assert dec.decide(101, 101.0, [_v(11)]).status == LoopStatus.FAILED_CONSISTENCY
    d = dec.decide(102, 102.0, [_v(12)])
    assert d.accepted and d.best.candidate.id == 12


def test_inconsistent_matches_are_not_accepted():
    dec = LoopClosureDecider(consistency=2, id_tolerance=2, max_query_gap=2)
    statuses = [dec.decide(100 + i, float(i), [_v(m)]).status for i, m in enumerate([10, 50, 5, 80])]
    assert all(s == LoopStatus.FAILED_CONSISTENCY for s in statuses)


def test_support_expires_after_max_query_gap():
    dec = LoopClosureDecider(consistency=2, id_tolerance=2, max_query_gap=2)
    dec.decide(100, 100.0, [_v(10)])
    assert dec.decide(104, 104.0, [_v(12)]).status == LoopStatus.FAILED_CONSISTENCY


def test_any_passed_candidate_of_an_earlier_query_supports():
    dec = LoopClosureDecider(consistency=2, id_tolerance=1, max_query_gap=1)
    dec.decide(100, 100.0, [_v(70, score=80), _v(10, score=40)])  # second-best hypothesis near 10
    assert dec.decide(101, 101.0, [_v(11)]).accepted


def test_strong_score_skips_consistency_and_one_disables_it():
    assert LoopClosureDecider(consistency=3, accept_score=100).decide(1, 1.0, [_v(0, score=150)]).accepted
    assert LoopClosureDecider(consistency=1).decide(1, 1.0, [_v(0)]).accepted
    with pytest.raises(ValueError):
        LoopClosureDecider(consistency=0)


def test_confirmation_also_accepts_the_earlier_supporting_query_once():
    dec = LoopClosureDecider(consistency=2, id_tolerance=2, max_query_gap=2)
    first = dec.decide(100, 100.0, [_v(10)])
    assert first.status == LoopStatus.FAILED_CONSISTENCY and first.confirmed == []
    second = dec.decide(101, 101.0, [_v(11)])
    assert second.accepted
    assert [(d.query_id, d.best.candidate.id, d.accepted) for d in second.confirmed] == [(100, 10, True)]
    assert "confirmed by keyframe 101" in second.confirmed[0].reason
    third = dec.decide(102, 102.0, [_v(12)])
    assert third.accepted and third.confirmed == []  # 100 and 101 were already reported
