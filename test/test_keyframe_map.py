import faiss
import numpy as np
import pytest

from vpr_ros.map import KeyframeMap


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_returns_best_first_with_cosine_similarity():
    rng = np.random.default_rng(0)
    data = _unit(rng, 50, 32)
    m = KeyframeMap(32)
    for i, d in enumerate(data):
        assert m.add(d, stamp=float(i)) == i
    res = m.search(data[10], k=3)
    assert res[0].id == 10 and res[0].similarity == pytest.approx(1.0, abs=1e-5)
    sims = [c.similarity for c in res]
    assert sims == sorted(sims, reverse=True)
    expected = np.argsort(-(data @ data[10]))[:3]
    assert [c.id for c in res] == expected.tolist()


def test_exclusion_window_in_keyframes():
    rng = np.random.default_rng(1)
    data = _unit(rng, 30, 16)
    m = KeyframeMap(16)
    for i, d in enumerate(data):
        m.add(d, stamp=float(i))
    res = m.search(data[29], k=5, exclude_recent=10)
    assert len(res) == 5
    assert all(c.id <= 29 - 10 for c in res)


def test_exclusion_window_in_seconds():
    rng = np.random.default_rng(2)
    data = _unit(rng, 30, 16)
    m = KeyframeMap(16)
    for i, d in enumerate(data):
        m.add(d, stamp=i * 0.5)
    res = m.search(data[29], k=30, exclude_seconds=5.0, query_stamp=14.5)
    assert res and all(c.stamp <= 9.5 for c in res)
    assert len(res) == 20  # stamps 0.0 .. 9.5


def test_exclusion_widens_search_past_many_similar_recent_keyframes():
    # The 40 newest keyframes are near-duplicates of the query: a naive top-(k+n) search
    # would return nothing outside the window; the map must keep looking.
    rng = np.random.default_rng(3)
    old = _unit(rng, 100, 8)
    query = _unit(rng, 1, 8)[0]
    m = KeyframeMap(8)
    for i, d in enumerate(old):
        m.add(d, stamp=float(i))
    for i in range(40):
        m.add(query + 1e-3 * i, stamp=100.0 + i)
    res = m.search(query, k=3, exclude_seconds=60.0, query_stamp=140.0)
    assert len(res) == 3 and all(c.id < 100 for c in res)


def test_empty_map_and_wrong_dimension():
    m = KeyframeMap(8)
    assert m.search(np.ones(8, np.float32) / np.sqrt(8), k=5) == []
    with pytest.raises(ValueError, match="expects 8"):
        m.add(np.ones(9, np.float32), stamp=0.0)
    with pytest.raises(ValueError, match="NaN"):
        m.add(np.full(8, np.nan, np.float32), stamp=0.0)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_index_factories_agree_with_exact_search(factory):
    rng = np.random.default_rng(4)
    data = _unit(rng, 300, 32)
    m = KeyframeMap(32, index_factory=factory)
    for i, d in enumerate(data):
        m.add(d, stamp=float(i))
    hits = sum(m.search(data[i], k=1)[0].id == i for i in range(0, 300, 10))
    assert hits == 30


def test_untrained_index_is_searched_exactly_then_trained():
    rng = np.random.default_rng(5)
    data = _unit(rng, 400, 16)
    m = KeyframeMap(16, index_factory="IVF4,Flat", train_size=200)
    for i, d in enumerate(data[:150]):
        m.add(d, stamp=float(i))
    assert not m.index.is_trained
    assert m.search(data[7], k=1)[0].id == 7
    for i, d in enumerate(data[150:], start=150):
        m.add(d, stamp=float(i))
    assert m.index.is_trained and m.index.ntotal == 400
    faiss.extract_index_ivf(m.index).nprobe = 4  # probe every list: exact
    assert m.search(data[321], k=1)[0].id == 321


def test_cpu_index_when_faiss_has_no_gpu():
    m = KeyframeMap(8, device="auto")
    assert m.on_gpu == (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)
