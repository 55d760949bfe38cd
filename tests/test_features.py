"""Handcrafted per-residue features: exact values on hand-worked windows, shapes and configs."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from ptmkit_plugins.features import EAAC, AAindex, Blosum62, OneHot, PseAAC
from pydantic import ValidationError

from ptmkit.alphabet import STANDARD
from ptmkit.hooks import build_registry
from ptmkit.plugin_api import Feature
from ptmkit.sitetable import SiteTable

ALL = {"onehot": OneHot, "blosum62": Blosum62, "aaindex": AAindex, "pseaac": PseAAC, "eaac": EAAC}
COL = {aa: i for i, aa in enumerate(STANDARD)}


def table(*windows: str) -> SiteTable:
    return SiteTable.from_records(
        [
            {
                "protein_id": f"P{i}",
                "position": i + 1,
                "residue": w[len(w) // 2],
                "window": w,
                "label": i % 2,
                "task": "phospho",
                "split": "train",
                "origin": f"test:{i + 1}",
            }
            for i, w in enumerate(windows)
        ]
    )


def make(cls: type[Feature], **config: object) -> Feature:
    return cls(cls.Config(**config))


def vec(**values: float) -> torch.Tensor:
    """A 20-dim vector in STANDARD order with the given residues set."""
    out = torch.zeros(20)
    for aa, v in values.items():
        out[COL[aa]] = v
    return out


# ---------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", sorted(ALL))
def test_shape_dtype_padding_and_determinism(name: str) -> None:
    feature = make(ALL[name])
    t = table("-ACK-", "KXWYA", "--S--")
    out = feature.encode(t)
    assert out.shape == (3, 5, feature.dim)
    assert out.dtype == torch.float32
    assert torch.equal(out, feature.encode(t))
    assert torch.equal(out, make(ALL[name]).encode(t))  # fresh instance, same output
    pad = torch.tensor([[c == "-" for c in w] for w in t.windows])
    assert out[pad].abs().sum() == 0
    assert out[~pad].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ALL))
def test_empty_table(name: str) -> None:
    feature = make(ALL[name])
    out = feature.encode(table())
    assert out.shape == (0, 0, feature.dim)
    assert out.dtype == torch.float32


def test_dims() -> None:
    assert make(OneHot).dim == 20
    assert make(Blosum62).dim == 20
    assert make(AAindex).dim == 13
    assert make(AAindex, indices=["KYTJ820101", "HOPT810101"]).dim == 2
    assert make(PseAAC).dim == 6
    assert make(PseAAC, lags=5).dim == 8
    assert make(EAAC).dim == 20


def test_registered_through_entry_point() -> None:
    registry = build_registry()
    assert registry.get("feature", "eaac").obj is EAAC
    for name, cls in ALL.items():
        spec = registry.get("feature", name)
        assert spec.obj is cls
        assert spec.provider == "ptmkit"
        assert spec.doc  # first docstring line is shown in listings


def test_unknown_config_key_rejected() -> None:
    with pytest.raises(ValidationError):
        OneHot.Config(unknow="zeros")  # misspelt key


# ---------------------------------------------------------------- onehot


def test_onehot_positions() -> None:
    out = make(OneHot).encode(table("-ACK-", "KXWYA"))
    assert torch.equal(out[0, 0], torch.zeros(20))
    assert torch.equal(out[0, 1], vec(A=1))
    assert torch.equal(out[0, 2], vec(C=1))
    assert torch.equal(out[0, 3], vec(K=1))
    assert torch.equal(out[1, 1], torch.zeros(20))  # X
    assert torch.equal(out[1, 2], vec(W=1))
    assert out[1].sum(dim=-1).tolist() == [1, 0, 1, 1, 1]


def test_onehot_uniform_unknown() -> None:
    out = make(OneHot, unknown="uniform").encode(table("-BXA-"))
    assert torch.allclose(out[0, 1], torch.full((20,), 0.05))
    assert torch.allclose(out[0, 2], torch.full((20,), 0.05))
    assert torch.equal(out[0, 3], vec(A=1))
    assert torch.equal(out[0, 0], torch.zeros(20))
    with pytest.raises(ValidationError):
        OneHot.Config(unknown="mean")


# ---------------------------------------------------------------- blosum62


def test_blosum62_values() -> None:
    out = make(Blosum62).encode(table("-AW--", "KXWYA"))
    a, w = out[0, 1], out[0, 2]
    assert a[COL["A"]] == 4 and w[COL["W"]] == 11
    assert a[COL["W"]] == -3 and w[COL["A"]] == -3
    assert a[COL["C"]] == 0 and a[COL["R"]] == -1
    assert w[COL["Y"]] == 2 and w[COL["C"]] == -2
    assert torch.equal(out[0, 3], torch.zeros(20))
    # X row of BLOSUM62 restricted to the 20 standard columns
    x = out[1, 1]
    assert x[COL["A"]] == 0 and x[COL["C"]] == -2 and x[COL["W"]] == -2 and x[COL["R"]] == -1
    assert torch.equal(out[1, 2], w)  # same residue, same row


def test_blosum62_scale() -> None:
    raw = make(Blosum62).encode(table("-AW--"))
    scaled = make(Blosum62, scale=11).encode(table("-AW--"))
    assert torch.allclose(scaled, raw / 11)
    assert scaled[0, 2, COL["W"]] == pytest.approx(1.0)
    for bad in (0, -2):
        with pytest.raises(ValidationError, match="scale must be a positive"):
            Blosum62.Config(scale=bad)


# ---------------------------------------------------------------- aaindex

#: Kyte-Doolittle hydropathy (Kyte & Doolittle 1982, Table 2), independent of the aaindex data.
KYTE_DOOLITTLE = dict(
    A=1.8, R=-4.5, N=-3.5, D=-3.5, C=2.5, Q=-3.5, E=-3.5, G=-0.4, H=-3.2, I=4.5,
    L=3.8, K=-3.9, M=1.9, F=2.8, P=-1.6, S=-0.8, T=-0.7, W=-0.9, Y=-1.3, V=4.2,
)  # fmt: skip


def test_aaindex_standardised_over_the_20_residues() -> None:
    out = make(AAindex).encode(table(STANDARD + "X-"))[0]
    rows = out[:20].double()
    assert torch.allclose(rows.mean(dim=0), torch.zeros(13, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(rows.std(dim=0, unbiased=False), torch.ones(13, dtype=torch.float64))
    assert torch.equal(out[20], torch.zeros(13))  # X
    assert torch.equal(out[21], torch.zeros(13))  # padding


def test_aaindex_kyte_doolittle_column() -> None:
    feature = make(AAindex, indices=["KYTJ820101"])
    out = feature.encode(table(STANDARD))[0, :, 0]
    assert STANDARD[int(out.argmax())] == "I"  # most hydrophobic
    assert STANDARD[int(out.argmin())] == "R"  # least
    mean = statistics.mean(KYTE_DOOLITTLE.values())  # -0.49
    std = statistics.pstdev(KYTE_DOOLITTLE.values())
    expected = torch.tensor([(KYTE_DOOLITTLE[aa] - mean) / std for aa in STANDARD])
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[COL["I"]] == pytest.approx((4.5 + 0.49) / std, abs=1e-6)


def test_aaindex_default_first_columns_and_order() -> None:
    kd_hw = make(AAindex, indices=["KYTJ820101", "HOPT810101"]).encode(table("-ID--"))
    default = make(AAindex).encode(table("-ID--"))
    assert torch.equal(default[..., :2], kd_hw)
    swapped = make(AAindex, indices=["HOPT810101", "KYTJ820101"]).encode(table("-ID--"))
    assert torch.equal(swapped, kd_hw.flip(-1))
    assert kd_hw[0, 1, 0] > 0 > kd_hw[0, 1, 1]  # I: hydrophobic, not hydrophilic
    assert kd_hw[0, 2, 0] < 0 < kd_hw[0, 2, 1]  # D: the reverse


def test_aaindex_missing_values_become_zero() -> None:
    # ROSM880104 has no value (NA) for P and R
    out = make(AAindex, indices=["ROSM880104"]).encode(table(STANDARD))[0, :, 0].double()
    assert out[COL["P"]] == 0 and out[COL["R"]] == 0
    known = torch.tensor([out[COL[aa]] for aa in STANDARD if aa not in "PR"])
    assert known.mean() == pytest.approx(0, abs=1e-6)
    assert known.std(unbiased=False) == pytest.approx(1, abs=1e-6)


def test_aaindex_config_validation() -> None:
    assert AAindex.Config(indices=[" kytj820101"]).indices == ["KYTJ820101"]
    with pytest.raises(ValidationError, match="unknown AAindex1 index 'KYTJ820199'") as info:
        AAindex.Config(indices=["KYTJ820101", "KYTJ820199"])
    assert "aaindex1.search" in str(info.value) and "KYTJ820101" in str(info.value)
    with pytest.raises(ValidationError, match="more than once"):
        AAindex.Config(indices=["KYTJ820101", "kytj820101"])
    with pytest.raises(ValidationError, match="at least one"):
        AAindex.Config(indices=[])


# ---------------------------------------------------------------- pseaac

#: Chou (2001) values for A, D, W, standardised by hand: (value - mean) / population std over
#: the 20 residues. Means/stds: hydrophobicity 0 / 0.974459, hydrophilicity -0.215 / 1.876506,
#: side-chain mass 62.95 / 30.120549.
CHOU_Z = {
    "A": (0.636251, -0.151878, -1.591936),
    "D": (-0.923590, 1.713290, -0.131140),
    "W": (0.831231, -1.697303, 2.226055),
}
# Theta(a, b) = mean over the 3 properties of the squared difference
THETA_AD = 2.681961
THETA_DW = 6.755970
THETA_AW = 5.667805


def test_pseaac_hand_example() -> None:
    out = make(PseAAC).encode(table("ADW--"))[0]  # lags 3, weight 0.05 -> D = 6
    for i, aa in enumerate("ADW"):
        assert torch.allclose(out[i, :3], torch.tensor(CHOU_Z[aa]), atol=1e-5)
    w = 0.05
    expected_theta = torch.tensor(
        [
            [THETA_AD, THETA_AW, 0.0],  # A: only right neighbours (D at 1, W at 2)
            [(THETA_AD + THETA_DW) / 2, 0.0, 0.0],  # D: both at lag 1; pad at lag 2
            [THETA_DW, THETA_AW, 0.0],  # W: left neighbours; pad on the right
        ]
    )
    assert torch.allclose(out[:3, 3:], w * expected_theta, atol=1e-5)
    assert torch.equal(out[3:], torch.zeros(2, 6))


def test_pseaac_weight_lags_and_nonstandard() -> None:
    unweighted = make(PseAAC, weight=1.0, lags=1).encode(table("AXD", "ADW"))
    assert unweighted.shape == (2, 3, 4)
    # X is not a residue: zero row, and not a neighbour of A or D
    assert torch.equal(unweighted[0, 1], torch.zeros(4))
    assert unweighted[0, 0, 3] == 0 and unweighted[0, 2, 3] == 0
    assert unweighted[1, 1, 3] == pytest.approx((THETA_AD + THETA_DW) / 2, abs=1e-5)
    # lags beyond the window are zero columns
    assert torch.equal(make(PseAAC, lags=5).encode(table("ADW"))[0, :, 5:], torch.zeros(3, 3))
    for bad in ({"lags": 0}, {"weight": -0.1}):
        with pytest.raises(ValidationError):
            PseAAC.Config(**bad)


def _pseaac_reference(window: str, lags: int, weight: float) -> list[list[float]]:
    """Straightforward per-position implementation of the docstring formula."""
    rows = make(PseAAC, lags=lags, weight=weight).encode(table(*STANDARD))[:, 0, :3].tolist()
    z = dict(zip(STANDARD, rows, strict=True))
    out = []
    for i, aa in enumerate(window):
        if aa not in z:
            out.append([0.0] * (3 + lags))
            continue
        row = list(z[aa])
        for k in range(1, lags + 1):
            terms = [
                sum((p - q) ** 2 for p, q in zip(z[aa], z[window[j]], strict=True)) / 3
                for j in (i - k, i + k)
                if 0 <= j < len(window) and window[j] in z
            ]
            row.append(weight * sum(terms) / len(terms) if terms else 0.0)
        out.append(row)
    return out


def test_pseaac_matches_reference_on_random_windows() -> None:
    rng = random.Random(7)
    windows = ["".join(rng.choice(STANDARD + "XX--") for _ in range(11)) for _ in range(40)]
    out = make(PseAAC, lags=4, weight=0.1).encode(table(*windows))
    expected = torch.tensor([_pseaac_reference(w, 4, 0.1) for w in windows])
    assert torch.allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------- eaac


def test_eaac_hand_example() -> None:
    out = make(EAAC, k=3).encode(table("-AXAC"))[0]
    assert torch.equal(out[0], torch.zeros(20))  # padding
    assert torch.equal(out[1], vec(A=1))  # "-AX": only A counts
    assert torch.equal(out[2], vec(A=1))  # "AXA": 2 A of 2 residues; X position kept
    assert torch.equal(out[3], vec(A=0.5, C=0.5))  # "XAC"
    assert torch.equal(out[4], vec(A=0.5, C=0.5))  # "AC" at the window edge
    wide = make(EAAC).encode(table("-AXAC"))[0]  # k = 5
    assert torch.equal(wide[1], vec(A=1))  # "-AXA" (clipped at the left edge)
    assert torch.allclose(wide[2], vec(A=2 / 3, C=1 / 3))  # "-AXAC"
    assert torch.equal(wide[4], vec(A=0.5, C=0.5))  # "XAC" (clipped at the right edge)


def test_eaac_no_residue_gives_zeros_and_k1_is_onehot() -> None:
    assert torch.equal(make(EAAC).encode(table("-XBX-")), torch.zeros(1, 5, 20))
    t = table("-ACK-", "KXWYA")
    assert torch.equal(make(EAAC, k=1).encode(t), make(OneHot).encode(t))


def test_eaac_matches_reference_on_random_windows() -> None:
    rng = random.Random(3)
    windows = ["".join(rng.choice(STANDARD + "XX--") for _ in range(9)) for _ in range(40)]
    out = make(EAAC, k=5).encode(table(*windows))
    for n, window in enumerate(windows):
        for i, aa in enumerate(window):
            sub = [c for c in window[max(0, i - 2) : i + 3] if c in COL]
            expected = torch.zeros(20)
            if aa != "-" and sub:
                for c in sub:
                    expected[COL[c]] += 1 / len(sub)
            assert torch.allclose(out[n, i], expected, atol=1e-6), (window, i)


def test_eaac_config_validation() -> None:
    with pytest.raises(ValidationError, match="k must be odd"):
        EAAC.Config(k=4)
    with pytest.raises(ValidationError):
        EAAC.Config(k=0)
