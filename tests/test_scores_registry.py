"""Registry, the Scorer base contract, and the edge cases every scorer shares."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.errors import ScoringError
from ncprobe.scores import Scorer, get_scorer, list_scorers, register_scorer
from ncprobe.scores import registry as registry_mod

# the contract tests run over every registered scorer: a new scorer is covered with no edit here
ALL = list_scorers()
# facts about the scorers that have been there from the start
LOGIT = ("msp", "maxlogit", "energy", "gen")
HEAD = ("vim", "neco")
FIRST = ("energy", "featnorm", "gda", "gen", "knn", "mahalanobis", "maxlogit", "msp", "ncc", "neco", "rmds", "vim")


def _setup(seed=0, n=300, d=12, c=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = 3 * rng.standard_normal((c, d))
    x = centers[y] + rng.standard_normal((n, d))
    # a head that classifies the fit set (scorers such as SHE keep only correctly classified samples)
    w, b = centers + 0.1 * rng.standard_normal((c, d)), -0.5 * (centers**2).sum(1)
    return x, y, (w, b), rng.standard_normal((40, d))


def _fit(name, seed=0):
    x, y, head, z = _setup(seed)
    s = get_scorer(name)
    if s.input == "logits":
        x, z = x @ head[0].T + head[1], z @ head[0].T + head[1]
    s.fit(x, y, head=head)
    return s, x, y, head, z


def test_list_and_attributes():
    names = list_scorers()
    assert names == sorted(names) and set(FIRST) <= set(names)  # others may register more
    assert sorted(list_scorers(registration_order=True)) == names
    for name in ALL:
        s = get_scorer(name)
        assert s.name == name
        assert s.input in ("features", "logits")
        assert isinstance(s.paper, str) and s.paper, f"{name} names no paper"
        assert isinstance(s.grid, dict) and set(s.grid) <= set(s.get_params()), name
        assert s.min_per_class >= 1
    for name in FIRST:
        s = get_scorer(name)
        assert s.input == ("logits" if name in LOGIT else "features")
        assert s.needs_head == (name in HEAD)
    assert get_scorer("gda").min_per_class == 2


def test_defaults_all_and_help_come_from_the_registry():
    from ncprobe.jobs.inputs import resolve_scorers
    from ncprobe.scores import default_scorers, scorer_class, scorers_help

    assert resolve_scorers("all") == list_scorers(registration_order=True)
    assert resolve_scorers(None) == default_scorers() == [n for n in list_scorers(registration_order=True)
                                                            if scorer_class(n).default]
    assert resolve_scorers("gda, KNN,gda") == ["gda", "knn"]
    text = scorers_help()
    assert all(name in text for name in ALL)
    with pytest.raises(ScoringError, match="unknown scorer"):
        resolve_scorers("gda,nope")


def test_unknown_name_and_parameter():
    with pytest.raises(
        ScoringError, match=f"unknown scorer 'mahalanobls'; choose one of: {', '.join(list_scorers())}$"
    ):
        get_scorer("mahalanobls")
    with pytest.raises(
        ScoringError,
        match="scorer 'knn' has no parameter kk; its parameters are: k, backend, device",
    ):
        get_scorer("knn", kk=3)
    with pytest.raises(ScoringError, match=r"\(none\)"):
        get_scorer("msp", T=2)
    assert get_scorer("KNN").name == "knn"


def test_repr_and_params():
    assert repr(get_scorer("energy", T=2)) == "Energy(T=2.0)"
    assert get_scorer("gen", M=5).get_params() == {"gamma": 0.1, "M": 5}
    assert repr(get_scorer("vim")) == "ViM(dim=None)"


def test_register_custom_scorer():
    @register_scorer
    class Twice(Scorer):
        """Test scorer: twice the first feature."""

        name = "twice_test"

        def __init__(self, factor: float = 2.0):
            super().__init__()
            self.factor = factor

        def _fit(self, x, y, head, stats):
            pass

        def _score_batch(self, x):
            return self.factor * x[:, 0]

    try:
        assert "twice_test" in list_scorers()
        s = get_scorer("twice_test", factor=3.0).fit(np.ones((2, 2)))
        np.testing.assert_allclose(s.score(np.array([[1.0, 0.0], [2.0, 5.0]])), [3.0, 6.0])
        with pytest.raises(ValueError, match="already registered"):

            @register_scorer
            class Other(Twice):
                name = "twice_test"
    finally:
        registry_mod._REGISTRY.pop("twice_test", None)
    with pytest.raises(TypeError):
        register_scorer(object)


@pytest.mark.parametrize("name", ALL)
def test_scores_are_finite_float64_and_batched(name):
    s, x, y, head, z = _fit(name)
    out = s.score(z)
    assert out.dtype == np.float64 and out.shape == (40,) and np.isfinite(out).all()
    s.batch_size = 3
    np.testing.assert_allclose(s.score(z), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_nan_rows_in_score_input_are_counted(name):
    s, x, y, head, z = _fit(name)
    z = z.copy()
    z[[3, 7, 30]] = np.nan
    z[5, 0] = np.inf
    s.batch_size = 8  # bad rows spread over several batches: all are counted
    with pytest.raises(ScoringError, match="4 of 40 rows"):
        s.score(z)


@pytest.mark.parametrize("name", ALL)
def test_empty_and_malformed_score_input(name):
    s, x, y, head, z = _fit(name)
    with pytest.raises(ScoringError, match="empty"):
        s.score(np.empty((0, z.shape[1])))
    with pytest.raises(ScoringError, match="width"):
        s.score(np.ones((2, z.shape[1] + 1)))
    with pytest.raises(ScoringError):
        s.score(None)


@pytest.mark.parametrize("name", [n for n in ALL if n not in (*LOGIT, "featnorm")
                                  and get_scorer(n).input == "features" and type(get_scorer(n)).fit is Scorer.fit])
def test_nan_rows_in_fit_input_are_counted(name):
    x, y, head, z = _setup()
    x = x.copy()
    x[[0, 10]] = np.nan
    with pytest.raises(ScoringError, match="2 of 300 rows of the fit features"):
        get_scorer(name).fit(x, y, head=head)
    with pytest.raises(ScoringError, match="empty"):
        get_scorer(name).fit(np.empty((0, 12)), np.empty(0, int), head=head)


@pytest.mark.parametrize("name", ALL)
def test_score_before_fit(name):
    with pytest.raises(ScoringError, match="not fitted"):
        get_scorer(name).score(np.ones((2, 3)))


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    x, y, head, z = _setup(1)
    a = get_scorer("mahalanobis").fit(x, y).score(z)
    b = (
        get_scorer("mahalanobis")
        .fit(torch.from_numpy(x), torch.from_numpy(y))
        .score(torch.from_numpy(z))
    )
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_negative_labels_rejected():
    x, y, head, z = _setup(2)
    y = y.copy()
    y[0] = -1
    with pytest.raises(ScoringError, match="drop OOD"):
        get_scorer("gda").fit(x, y)


def test_overflowing_scores_raise_instead_of_returning_inf():
    s = get_scorer("energy", T=1e-300).fit()
    with pytest.raises(ScoringError, match="produced 1 non-finite scores of 2"):
        s.score(np.array([[1e10, 0.0], [0.0, 0.0]]))


def test_readme_scorer_table_is_the_registrys():
    from pathlib import Path

    from ncprobe.scores import scorer_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- scorers:begin -->\n")[1].split("\n<!-- scorers:end -->")[0]
    assert block == scorer_table(), (
        "README's scorer table is stale; regenerate it with "
        "python -c 'from ncprobe.scores import scorer_table; print(scorer_table())'"
    )
    assert len(ALL) >= 30
