"""Tests of fastbp.estimators: scikit-learn's estimator checks, then real training runs."""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._testing import ignore_warnings
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastbp import Network, TrainingDivergedError
from fastbp.estimators import MLPClassifier, MLPRegressor

# Small networks and few epochs keep the estimator checks quick. The classifier's larger
# learning rate reaches the accuracy the checks ask for within those epochs. The
# regressor's small one and its minibatches of 20 are what SGD needs on the checks'
# unscaled targets (check_regressor_multioutput fits make_regression's raw y, hundreds in
# size): a larger step diverges there, fewer steps miss R² > 0.5 in
# check_regressors_train.
CHECKED = [
    MLPClassifier((5,), learning_rate_init=0.1, max_iter=50, random_state=0),
    MLPRegressor(
        (5,), learning_rate_init=0.002, batch_size=20, max_iter=50, random_state=0
    ),
]


def expected_failed_checks(estimator):
    """None: every check applies and passes."""
    return {}


@pytest.mark.filterwarnings("ignore:Got batch_size=.*clipped:UserWarning")
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    # As in scikit-learn's own common tests of its MLPs: the few epochs used here end
    # before convergence by design.
    with ignore_warnings(category=ConvergenceWarning):
        check(estimator)


# --- data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16, y, random_state=0)


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(
        n_samples=400, n_features=10, n_informative=5, random_state=0
    )
    return train_test_split(StandardScaler().fit_transform(X), y, random_state=0)


@pytest.fixture(scope="module")
def smooth():
    """y = sin(x0) + x1² / 2 on [-2, 2]², a smooth function for regression."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(600, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2
    return train_test_split(X, y, random_state=0)


def quiet_fit(est, X, y, **kwargs):
    with ignore_warnings(category=ConvergenceWarning):
        return est.fit(X, y, **kwargs)


# --- training ------------------------------------------------------------------------


def test_digits_accuracy(digits):
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier((64,), learning_rate_init=0.05, max_iter=50, random_state=0)
    quiet_fit(clf, X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95
    assert clf.out_activation_ == "softmax"
    assert clf.network_.output == "softmax"
    assert clf.network_.cost_name == "cross_entropy"
    assert [c.shape for c in clf.coefs_] == [(64, 64), (64, 10)]
    assert [b.shape for b in clf.intercepts_] == [(64,), (10,)]
    assert clf.n_layers_ == 3 and clf.n_outputs_ == 10
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    assert_allclose(proba.sum(axis=1), 1.0)
    assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X_test))


def test_regression_r2(smooth):
    X_train, X_test, y_train, y_test = smooth
    reg = quiet_fit(
        MLPRegressor((32,), activation="tanh", max_iter=300, random_state=0),
        X_train, y_train,
    )
    assert reg.score(X_test, y_test) > 0.95
    assert reg.out_activation_ == "identity"
    assert reg.network_.output == "identity"
    assert reg.network_.cost_name == "quadratic"
    assert reg.predict(X_test).shape == (len(X_test),)


def test_binary_classification(binary):
    X_train, X_test, y_train, y_test = binary
    labels = np.array(["neg", "pos"])
    clf = quiet_fit(MLPClassifier((16,), random_state=0), X_train, labels[y_train])
    assert clf.n_outputs_ == 1 and clf.out_activation_ == "logistic"
    assert clf.network_.output == "sigmoid"
    assert clf.score(X_test, labels[y_test]) > 0.85
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    assert_allclose(proba.sum(axis=1), 1.0)
    assert_array_equal(clf.predict(X_test), labels[(proba[:, 1] >= 0.5).astype(int)])
    assert_allclose(clf.predict_log_proba(X_test), np.log(proba))


def test_multilabel_classification():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    Y = (X @ rng.normal(size=(6, 3)) > 0).astype(int)  # three overlapping labels
    clf = quiet_fit(MLPClassifier((16,), random_state=0), X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict(X).shape == Y.shape
    assert clf.predict_proba(X).shape == Y.shape
    assert clf.score(X, Y) > 0.8  # subset accuracy


def test_multioutput_regression(smooth):
    X_train, _, y_train, _ = smooth
    Y = np.column_stack([y_train, -2 * y_train])
    reg = quiet_fit(
        MLPRegressor((16,), activation="tanh", learning_rate_init=0.005, random_state=0),
        X_train, Y,
    )
    assert reg.n_outputs_ == 2
    assert reg.predict(X_train).shape == Y.shape
    assert reg.score(X_train, Y) > 0.9


def test_same_random_state_same_fit(binary):
    X_train, _, y_train, _ = binary
    a = quiet_fit(MLPClassifier((8,), max_iter=20, random_state=3), X_train, y_train)
    b = quiet_fit(MLPClassifier((8,), max_iter=20, random_state=3), X_train, y_train)
    c = quiet_fit(MLPClassifier((8,), max_iter=20, random_state=4), X_train, y_train)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(wa, wb)
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_random_state_instance_is_consumed(binary):
    X_train, _, y_train, _ = binary
    rs = np.random.RandomState(0)
    clf = MLPClassifier((4,), max_iter=3, random_state=rs)
    first = quiet_fit(clf, X_train, y_train).coefs_[0].copy()
    second = quiet_fit(clf, X_train, y_train).coefs_[0]
    assert not np.array_equal(first, second)


def test_stops_on_loss_plateau(binary):
    X_train, _, y_train, _ = binary
    clf = MLPClassifier((8,), tol=10.0, n_iter_no_change=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X_train, y_train)
    # sklearn's rule: the first epoch improves on best_loss_ = inf, the next ones do not
    # by tol, and training stops once more than n_iter_no_change of them have passed.
    assert clf.n_iter_ == 4
    assert len(clf.loss_curve_) == 4
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_convergence_warning_at_max_iter(binary):
    X_train, _, y_train, _ = binary
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\)"):
        clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(X_train, y_train)
    assert clf.n_iter_ == 2 and clf.t_ == 2 * len(X_train)


def test_warm_start_continues(binary):
    X_train, _, y_train, _ = binary
    clf = MLPClassifier((8,), max_iter=5, warm_start=True, random_state=0)
    quiet_fit(clf, X_train, y_train)
    net, before = clf.network_, [w.copy() for w in clf.network_.weights]
    quiet_fit(clf, X_train, y_train)
    assert clf.network_ is net
    assert len(clf.loss_curve_) == 10 and clf.n_iter_ == 5
    assert clf.t_ == 10 * len(X_train)
    assert not np.array_equal(before[0], clf.network_.weights[0])
    # The second fit picks up from the first one's loss, not from a fresh start.
    cold = quiet_fit(MLPClassifier((8,), max_iter=5, random_state=0), X_train, y_train)
    assert clf.loss_curve_[5] < cold.loss_curve_[0]

    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X_train, np.where(y_train == 1, 2, y_train))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        clf.set_params(hidden_layer_sizes=(9,)).fit(X_train, y_train)


def test_no_warm_start_refits(binary):
    X_train, _, y_train, _ = binary
    clf = MLPClassifier((8,), max_iter=5, random_state=0)
    quiet_fit(clf, X_train, y_train)
    first = clf.network_
    quiet_fit(clf, X_train, y_train)
    assert clf.network_ is not first and len(clf.loss_curve_) == 5


def test_partial_fit_continues(binary):
    X_train, X_test, y_train, y_test = binary
    clf = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X_train, y_train)
    for _ in range(30):
        clf.partial_fit(X_train, y_train, classes=[0, 1])
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 30
    assert clf.t_ == 30 * len(X_train)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(X_test, y_test) > 0.8

    # classes given first, a chunk need not hold them all
    clf = MLPClassifier((8,), random_state=0)
    clf.partial_fit(X_train[y_train == 0], y_train[y_train == 0], classes=[0, 1])
    clf.partial_fit(X_train[y_train == 1], y_train[y_train == 1])
    assert_array_equal(clf.classes_, [0, 1])
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X_train, y_train + 1)


def test_partial_fit_matches_one_epoch_fits(smooth):
    """partial_fit is one epoch that keeps the momentum, as two epochs of fit do."""
    X_train, _, y_train, _ = smooth
    params = dict(hidden_layer_sizes=(4,), shuffle=False, random_state=0)
    inc = MLPRegressor(**params)
    inc.partial_fit(X_train, y_train).partial_fit(X_train, y_train)
    full = quiet_fit(MLPRegressor(max_iter=2, **params), X_train, y_train)
    for a, b in zip(inc.coefs_ + inc.intercepts_, full.coefs_ + full.intercepts_):
        assert_allclose(a, b, rtol=1e-12)
    assert_allclose(inc.loss_curve_, full.loss_curve_, rtol=1e-12)


def test_regressor_partial_fit(smooth):
    X_train, X_test, y_train, y_test = smooth
    reg = MLPRegressor((16,), activation="tanh", random_state=0)
    for _ in range(50):
        reg.partial_fit(X_train, y_train)
    assert reg.score(X_test, y_test) > 0.8
    with pytest.raises(ValueError, match="early_stopping"):
        reg.set_params(early_stopping=True).partial_fit(X_train, y_train)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_early_stopping(Estimator, binary, smooth):
    X_train, _, y_train, _ = binary if Estimator is MLPClassifier else smooth
    est = Estimator((8,), early_stopping=True, n_iter_no_change=3, random_state=0)
    quiet_fit(est, X_train, y_train)
    assert est.best_loss_ is None
    assert len(est.validation_scores_) == est.n_iter_ == len(est.loss_curve_)
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.n_iter_ < est.max_iter
    plain = quiet_fit(Estimator((8,), max_iter=2, random_state=0), X_train, y_train)
    assert plain.validation_scores_ is None and plain.best_validation_score_ is None


def test_early_stopping_keeps_best_parameters(binary):
    X_train, _, y_train, _ = binary
    clf = MLPClassifier(
        (8,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=5,
        learning_rate_init=0.3, random_state=0,
    )
    quiet_fit(clf, X_train, y_train)
    assert np.argmax(clf.validation_scores_) < clf.n_iter_ - 1  # a later epoch was worse
    # The held-out split, drawn as the estimator draws it: the RandomState seeded by
    # random_state gives the network's seed first, then the stratified split.
    rs = np.random.RandomState(0)
    rs.randint(np.iinfo(np.int32).max)
    _, X_val, _, y_val = train_test_split(
        X_train, y_train, test_size=0.2, random_state=rs, stratify=y_train
    )
    assert clf.score(X_val, y_val) == clf.best_validation_score_


def test_early_stopping_validation_too_small():
    X = np.arange(10.0).reshape(-1, 1)
    y = np.arange(10.0)
    with pytest.raises(ValueError, match="validation set is too small"):
        MLPRegressor(early_stopping=True, validation_fraction=0.1).fit(X, y)


def test_pipeline_and_cross_val_score(binary):
    X_train, _, y_train, _ = binary
    X_raw = X_train * 50 + 100  # far from standardised
    pipe = make_pipeline(
        StandardScaler(), MLPClassifier((8,), max_iter=50, random_state=0)
    )
    with ignore_warnings(category=ConvergenceWarning):
        scores = cross_val_score(pipe, X_raw, y_train, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.8


def test_regressor_cross_val_score(smooth):
    X_train, _, y_train, _ = smooth
    reg = MLPRegressor((16,), activation="tanh", max_iter=100, random_state=0)
    with ignore_warnings(category=ConvergenceWarning):
        scores = cross_val_score(reg, X_train, y_train, cv=3)
    assert scores.mean() > 0.8


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_float32(Estimator, binary):
    X_train, X_test, y_train, _ = binary
    est = quiet_fit(
        Estimator((8,), max_iter=10, dtype="float32", random_state=0), X_train, y_train
    )
    assert est.network_.dtype == "float32"
    assert all(c.dtype == np.float32 for c in est.coefs_ + est.intercepts_)
    if Estimator is MLPClassifier:
        assert est.predict_proba(X_test).dtype == np.float32
    else:
        assert est.predict(X_test).dtype == np.float32
    est64 = quiet_fit(
        Estimator((8,), max_iter=10, dtype=np.float64, random_state=0), X_train, y_train
    )
    assert all(c.dtype == np.float64 for c in est64.coefs_)


ORACLE_TARGETS = {
    "regression": lambda X: np.sin(X[:, 0]) + X[:, 1],
    "multioutput": lambda X: np.column_stack([np.sin(X[:, 0]), X[:, 1]]),
    "binary": lambda X: (X[:, 0] > 0).astype(int),
    "multiclass": lambda X: np.digitize(X[:, 0], [-0.5, 0.5]),
    "multilabel": lambda X: (X[:, :3] > 0).astype(int),
}


@pytest.mark.parametrize("target", list(ORACLE_TARGETS))
@pytest.mark.parametrize("alpha, batch_size", [(0.3, 12), (0.0, 13)])
def test_matches_sklearn_sgd(target, alpha, batch_size):
    """scikit-learn's own MLP, solver="sgd" with classical momentum, as the oracle.

    Both start from the same parameters (copied into sklearn's after a first epoch) and
    train 8 more epochs without shuffling: the parameters agree to rounding. The L2
    decay matches exactly when the minibatches are all full (60 = 5 × 12); the loss
    when there is no penalty term (its per-minibatch norms are approximated here).
    """
    from sklearn import neural_network

    X = np.random.default_rng(0).normal(size=(60, 4))
    y = ORACLE_TARGETS[target](X)
    if target in ("regression", "multioutput"):
        Ours, Theirs = MLPRegressor, neural_network.MLPRegressor
    else:
        Ours, Theirs = MLPClassifier, neural_network.MLPClassifier
    params = dict(
        hidden_layer_sizes=(5, 3), activation="tanh", alpha=alpha, batch_size=batch_size,
        learning_rate_init=0.05, momentum=0.9, shuffle=False, max_iter=1,
        warm_start=True, tol=0.0, random_state=0,
    )
    theirs = quiet_fit(Theirs(solver="sgd", nesterovs_momentum=False, **params), X, y)
    ours = quiet_fit(Ours(**params), X, y)
    assert theirs.out_activation_ == ours.out_activation_
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, ours.coefs_ + ours.intercepts_):
        a[...] = b
    quiet_fit(theirs.set_params(max_iter=8), X, y)
    quiet_fit(ours.set_params(max_iter=8), X, y)
    for a, b in zip(theirs.coefs_ + theirs.intercepts_, ours.coefs_ + ours.intercepts_):
        assert_allclose(b, a, rtol=1e-10, atol=1e-13)
    if alpha == 0:
        assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-10)
    else:  # the penalty of loss_ is approximated
        assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=0.05)


def test_alpha_is_sklearn_l2_per_step():
    """One full-batch step: w := w - η (∂C/∂w + (α / m) w), biases without decay."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1
    alpha, lr = 3.0, 0.05
    reg = MLPRegressor(
        (4,), alpha=alpha, learning_rate_init=lr, momentum=0.0, shuffle=False,
        random_state=0,
    )
    net = Network([3, 4, 1], hidden="relu", output="identity", cost="quadratic",
                  seed=np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    gW, gb = net.gradients(X, y.reshape(-1, 1))
    reg.partial_fit(X, y)
    for l in range(2):
        assert_allclose(
            reg.network_.weights[l],
            net.weights[l] - lr * (gW[l] + alpha / len(X) * net.weights[l]), rtol=1e-12,
        )
        assert_allclose(reg.network_.biases[l], net.biases[l] - lr * gb[l], rtol=1e-12)


def test_loss_is_sklearn_loss():
    """loss_ = data loss (½ mean squared error over samples and outputs) + α/2n ‖W‖²."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    Y = rng.normal(size=(30, 3))
    reg = MLPRegressor((5,), alpha=0.5, learning_rate_init=1e-12, random_state=0)
    reg.partial_fit(X, Y)  # a step so small that the parameters do not change
    out = reg.predict(X)
    sq = sum(float((c ** 2).sum()) for c in reg.coefs_)
    assert_allclose(reg.loss_, 0.5 * np.mean((out - Y) ** 2) + 0.5 * 0.5 * sq / 30,
                    rtol=1e-9)


def test_coefs_are_live_transposes(binary):
    X_train, X_test, y_train, _ = binary
    clf = quiet_fit(MLPClassifier((3,), max_iter=2, random_state=0), X_train, y_train)
    for c, w in zip(clf.coefs_, clf.network_.weights):
        assert c.shape == w.T.shape and np.shares_memory(c, w)
    clf.coefs_[1][...] = 0
    clf.intercepts_[1][...] = 2.0  # sigmoid(2) > 0.5 everywhere
    assert_array_equal(clf.predict(X_test), 1)


def test_pickle_round_trip(binary):
    X_train, X_test, y_train, _ = binary
    clf = quiet_fit(MLPClassifier((8,), max_iter=5, random_state=0), X_train, y_train)
    clone_ = pickle.loads(pickle.dumps(clf))
    assert_array_equal(clf.predict_proba(X_test), clone_.predict_proba(X_test))
    clone_.partial_fit(X_train, y_train)  # training goes on after loading


def test_memmap_loaded_estimator_trains_on(binary, tmp_path):
    joblib = pytest.importorskip("joblib")
    X_train, X_test, y_train, _ = binary
    clf = quiet_fit(MLPClassifier((8,), max_iter=5, random_state=0), X_train, y_train)
    joblib.dump(clf, tmp_path / "clf.joblib")
    loaded = joblib.load(tmp_path / "clf.joblib", mmap_mode="r")
    assert_array_equal(clf.predict_proba(X_test), loaded.predict_proba(X_test))
    clf.partial_fit(X_train, y_train)
    loaded.partial_fit(X_train, y_train)  # momentum kept, as in the original
    assert_array_equal(clf.predict_proba(X_test), loaded.predict_proba(X_test))


def test_divergence_is_reported(smooth):
    X_train, _, y_train, _ = smooth
    reg = MLPRegressor((8,), learning_rate_init=10.0, random_state=0)
    with pytest.raises(TrainingDivergedError, match="learning_rate_init"):
        reg.fit(X_train, 1e3 * y_train)


def test_single_class_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier().fit([[0.0], [1.0]], [1, 1])


def test_verbose_prints_losses(binary, capsys):
    X_train, _, y_train, _ = binary
    quiet_fit(MLPClassifier((4,), max_iter=2, verbose=True, random_state=0),
              X_train, y_train)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


def test_feature_names(binary):
    pd = pytest.importorskip("pandas")
    X_train, _, y_train, _ = binary
    df = pd.DataFrame(X_train, columns=[f"f{i}" for i in range(X_train.shape[1])])
    clf = quiet_fit(MLPClassifier((4,), max_iter=2, random_state=0), df, y_train)
    assert_array_equal(clf.feature_names_in_, df.columns)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"momentum": 1.0}, "'momentum' parameter"),
        ({"activation": "softmax"}, "'activation' parameter"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"hidden_layer_sizes": (3, 0)}, "hidden_layer_sizes must be positive"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit([[0.0], [1.0]], [0, 1])
