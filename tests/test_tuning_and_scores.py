"""--val-ood hyper-parameter choice (validation sets only) and per-sample scores out (--save-scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ncprobe.errors import NcprobeError
from ncprobe.features.featureset import FeatureSet
from ncprobe.jobs.compute import ood_frame
from ncprobe.jobs.write import read_scores
from ncprobe.scores import Scorer, register_scorer
from ncprobe.scores import registry as registry_mod


@pytest.fixture
def signed_scorer():
    """score = w * x0, with w searched over (-1, +1): the best w is known from where the OOD rows lie."""

    @register_scorer
    class Signed(Scorer):
        """Test scorer: a signed first feature.
        score = w x_0."""

        name = "signed_test"
        paper = "test"
        grid = {"w": (-1.0, 1.0)}

        def __init__(self, w: float = -1.0):
            super().__init__()
            self.w = float(w)

        def _fit(self, x, y, head, stats):
            pass

        def _score_batch(self, x):
            return self.w * x[:, 0]

    yield "signed_test"
    registry_mod._REGISTRY.pop("signed_test", None)


def _fs(name, x0, seed):
    rng = np.random.default_rng(seed)
    x = np.c_[x0 + 0.1 * rng.standard_normal(len(x0)), rng.standard_normal(len(x0))].astype(np.float32)
    logits = np.zeros((len(x0), 2), np.float32)
    return FeatureSet(name=name, layers=["penultimate", "logits"], features={"penultimate": x, "logits": logits},
                      labels=np.zeros(len(x0), np.int64))


def test_val_ood_recovers_the_known_best_and_test_sets_never_influence_it(signed_scorer):
    fit, id_fs = _fs("fit", np.zeros(50), 0), _fs("id", np.zeros(80), 1)
    below, above = _fs("below", np.full(60, -5.0), 2), _fs("above", np.full(60, 5.0), 3)
    other = _fs("other", np.full(60, 3.0), 4)

    def run(val, test):
        return ood_frame(fit, id_fs, test, {}, None, [signed_scorer], val_sets=val).set_index("ood")

    # OOD below the ID rows: only w = +1 ranks ID above them
    for test in ([above], [other], [above, other]):
        got = run([below], test)
        assert set(got["params"]) == {"w=1"} and set(got["tuned_on"]) == {"below"}
    assert run([below], [above]).loc["above", "auroc"] == 0.0  # reported honestly, not re-tuned on the test set
    # the same test set, another validation set: the other choice
    assert set(run([above], [below])["params"]) == {"w=-1"}
    # without validation sets: the default, not tuned
    plain = run([], [below])
    assert set(plain["params"]) == {"w=-1"} and set(plain["tuned_on"]) == {""}
    # ties keep the first grid point: a validation set equal to the ID set gives AUROC 0.5 for every w
    assert set(run([_fs("same", np.zeros(80), 1)], [below])["params"]) == {"w=-1"}


def test_fixed_parameters_are_not_searched(signed_scorer):
    fit, id_fs, below = _fs("fit", np.zeros(50), 0), _fs("id", np.zeros(80), 1), _fs("below", np.full(60, -5.0), 2)
    got = ood_frame(fit, id_fs, [below], {}, None, [signed_scorer], params={signed_scorer: {"w": -1.0}},
                    val_sets=[below])
    assert set(got["params"]) == {"w=-1"} and set(got["tuned_on"]) == {""}


ID = "digits:test@classes=0-3"
FIT = "digits:train@classes=0-3"




def test_layers_with_val_ood_and_saved_scores(small_ckpt, tmp_path):
    from ncprobe import api

    res = api.layers(str(small_ckpt), ID, ["near=digits:test@classes=6-9"], FIT, scorers="knn,energy,msp",
                     val_ood=["val=digits:test@classes=4-5"], save_scores=True, out=tmp_path, use_cache=False,
                     progress=False, plot=False)
    ood = res.ood
    tuned = ood[ood.scorer.isin(["knn", "energy"])]
    assert set(tuned["tuned_on"]) == {"val"} and set(ood.loc[ood.scorer == "msp", "tuned_on"]) == {""}
    assert set(ood.loc[ood.scorer == "energy", "params"]) <= {"T=1", "T=10", "T=100", "T=1000"}
    assert "val" not in set(ood["ood"])
    # the saved file is the returned table, and the CSV's AUROCs follow from it
    saved = read_scores(res.scores_path)
    pd.testing.assert_frame_equal(saved, res.scores.reset_index(drop=True), check_dtype=False)
    assert list(saved["set"].unique()) == [res.ood["id"].iloc[0], "near"]
    assert (saved.loc[saved["set"] == "near", "label"] >= 6).all()
    for row in ood.itertuples():
        col = f"{row.layer}/{row.scorer}"
        s_id = saved.loc[saved["set"] == row.id, col]
        s_ood = saved.loc[saved["set"] == row.ood, col]
        y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
        assert row.auroc == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]), abs=1e-12)


def test_fit_split_scores_keep_the_source_index(small_ckpt):
    from ncprobe import api
    from ncprobe.data import load_dataset

    res = api.layers(str(small_ckpt), ID, ["noise:gaussian@n=20,size=8"], fit_split=0.5, scorers="msp",
                     save_scores=True, use_cache=False, progress=False, plot=False)
    source = load_dataset(ID)
    id_rows = res.scores[res.scores["set"].str.endswith("[rest]")]
    # the remaining half of the ID set: indices into the whole set, with that set's labels
    assert id_rows["index"].is_unique and len(id_rows) < len(source)
    np.testing.assert_array_equal(id_rows["label"].to_numpy(), source.labels[id_rows["index"].to_numpy()])
    noise = res.scores[res.scores["set"] == "noise:gaussian@n=20,size=8"]
    np.testing.assert_array_equal(noise["index"].to_numpy(), np.arange(20))


def test_a_test_set_is_refused_as_validation_set(small_ckpt):
    from ncprobe import api

    with pytest.raises(NcprobeError, match="both a test OOD set and a validation OOD set"):
        api.layers(str(small_ckpt), ID, ["near=digits:test@classes=6-9"], FIT, val_ood=["digits:test@classes=6-9"],
                   use_cache=False, progress=False)
