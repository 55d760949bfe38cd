import random

import pytest
import torch
from ptmkit.alphabet import STANDARD
from pydantic import ValidationError

from ptmkit_plugin_example.cksaap import CKSAAP, DEFAULT_GROUPS


def reference(windows: list[str], gaps: int, window: int, groups: tuple[str, ...] | None) -> torch.Tensor:
    """Straight from the definition, with plain loops (slow but obviously right)."""
    groups = groups if groups is not None else tuple(STANDARD)
    group_of = {a: g for g, letters in enumerate(groups) for a in letters}
    n_groups, half = len(groups), window // 2
    width = len(windows[0])
    out = torch.zeros(len(windows), width, n_groups * n_groups * (gaps + 1))
    for r, w in enumerate(windows):
        for i in range(width):
            if w[i] == "-":
                continue
            lo, hi = max(0, i - half), min(width - 1, i + half)
            for k in range(gaps + 1):
                counts = torch.zeros(n_groups * n_groups)
                for j in range(lo, hi - k):
                    a, b = w[j], w[j + k + 1]
                    if a in group_of and b in group_of:
                        counts[group_of[a] * n_groups + group_of[b]] += 1
                if counts.sum() > 0:
                    counts /= counts.sum()
                out[r, i, k * n_groups * n_groups : (k + 1) * n_groups * n_groups] = counts
    return out


def random_windows(n: int, width: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w = [rng.choice(STANDARD + "X") for _ in range(width)]
        left, right = rng.randint(0, width // 2), rng.randint(0, width // 2)
        w[:left] = "-" * left
        w[width - right :] = "-" * right
        w[width // 2] = "H"
        out.append("".join(w))
    return out


@pytest.mark.parametrize(
    "gaps, window, groups",
    [(0, 3, DEFAULT_GROUPS), (2, 7, DEFAULT_GROUPS), (3, 5, None), (1, 11, ("AG", "CDEFHIKLMNPQRSTVWY"))],
)
def test_matches_the_definition(table_of, gaps, window, groups):
    windows = random_windows(40, 13, seed=gaps * 100 + window)
    feature = CKSAAP(CKSAAP.Config(gaps=gaps, window=window, groups=groups))
    got = feature.encode(table_of(windows))
    assert got.dtype == torch.float32
    assert got.shape == (40, 13, feature.dim)
    torch.testing.assert_close(got, reference(windows, gaps, window, groups))


def test_dimension_is_groups_squared_times_gaps():
    assert CKSAAP(CKSAAP.Config()).dim == 5 * 5 * 2
    assert CKSAAP(CKSAAP.Config(gaps=2, window=7)).dim == 75
    assert CKSAAP(CKSAAP.Config(groups=None, gaps=0)).dim == 400


def test_worked_example(table_of):
    # groups: G A V L M I -> 0, F Y W -> 1, K R H -> 2, D E -> 3, S T C P N Q -> 4
    feature = CKSAAP(CKSAAP.Config(gaps=1, window=3))
    out = feature.encode(table_of(["-AKDE"]))[0]
    assert torch.all(out[0] == 0)  # padding
    # position 2 (K): sub-window A K D; gap 0 pairs (A,K) -> 0*5+2 and (K,D) -> 2*5+3
    expected = torch.zeros(50)
    expected[[2, 13]] = 0.5
    expected[25 + 0 * 5 + 3] = 1.0  # gap 1: (A, D)
    torch.testing.assert_close(out[2], expected)
    # position 1 (A) sees only - A K: one gap-0 pair (A, K), no gap-1 pair (padding is not counted)
    assert out[1, 2] == 1.0 and out[1].sum() == 1.0


def test_blocks_sum_to_one_or_zero_and_padding_is_zero(table_of):
    windows = random_windows(30, 15, seed=7)
    feature = CKSAAP(CKSAAP.Config(gaps=2, window=5))
    out = feature.encode(table_of(windows))
    sums = out.reshape(30, 15, 3, 25).sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))
    pad = torch.tensor([[c == "-" for c in w] for w in windows])
    assert torch.all(out[pad] == 0)


def test_empty_table(table_of):
    out = CKSAAP(CKSAAP.Config()).encode(table_of([]))
    assert out.shape == (0, 0, 50)


def test_cache_key_follows_config_and_is_stable():
    a = CKSAAP(CKSAAP.Config(gaps=1))
    assert a.cache_key() == CKSAAP(CKSAAP.Config(gaps=1)).cache_key()
    assert a.cache_key() != CKSAAP(CKSAAP.Config(gaps=2)).cache_key()
    assert a.cache_key() != CKSAAP(CKSAAP.Config(groups=None)).cache_key()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"window": 6}, "must be odd"),
        ({"window": 5, "gaps": 4}, "largest possible gap: 3"),
        ({"groups": ["GAVLMI", "FYW"]}, "missing"),
        ({"groups": ["GAVLMIA", "FYW", "KRH", "DE", "STCPNQ"]}, "repeated: A"),
        ({"groups": ["GAVLMIZ", "FYW", "KRH", "DE", "STCPNQ"]}, "bad letters"),
        ({"gap": 1}, "Extra inputs"),
    ],
)
def test_config_errors_are_clear(config, message):
    with pytest.raises(ValidationError, match=message):
        CKSAAP.Config.model_validate(config)
