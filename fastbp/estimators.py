"""scikit-learn estimators around :class:`fastbp.Network`: MLPClassifier and MLPRegressor.

They take scikit-learn's parameter names where the meaning is the same, keep its fitted
attributes (``coefs_``, ``loss_curve_``, ``n_iter_``, ...) and its stopping rule, and
train with :meth:`Network.fit` (minibatch SGD with momentum), which runs the epochs in
the kernels and calls back here once per epoch to decide whether to stop.

Differences from :mod:`sklearn.neural_network`, all of them deliberate:

- The only solver is minibatch SGD with classical momentum (sklearn's ``solver="sgd"``
  with ``nesterovs_momentum=False`` and ``learning_rate="constant"``). sklearn defaults
  to Adam with ``learning_rate_init=0.001``; plain SGD needs a larger step, so the
  default here is ``learning_rate_init=0.01`` with ``momentum=0.9`` (an effective step
  of about η / (1 - μ) = 0.1).
- Initialisation is the Network's own (He normal for ReLU layers, LeCun normal
  otherwise, zero biases) instead of sklearn's Glorot uniform.
- ``dtype`` picks the precision of the parameters and of every computation; sklearn
  follows the dtype of X instead.
- No sparse input, no ``sample_weight``, no lbfgs, no learning-rate schedules.

The L2 penalty ``alpha`` means what it means in sklearn: the loss of a minibatch of m
examples is its mean cost plus α/(2m) Σ‖W‖², so each step adds (α/m) W to the weight
gradient (never to the biases). :meth:`Network.fit` applies a fixed λ w per step, so the
estimators pass λ = α / ``batch_size``: every full minibatch gets exactly sklearn's
decay; the last, partial minibatch of an epoch (when ``batch_size`` does not divide the
number of samples) gets α / batch_size instead of sklearn's larger α / m.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    is_classifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import check_is_fitted, validate_data

from .network import Network, TrainingDivergedError

#: scikit-learn's names of the hidden activations -> fastbp's.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

#: sklearn's names of the output activations (``out_activation_``) -> fastbp's.
OUTPUTS = {"identity": "identity", "logistic": "sigmoid", "softmax": "softmax"}

#: Seeds handed to the Network are drawn below this bound from the estimator's RandomState.
_SEED_BOUND = np.iinfo(np.int32).max


class _BaseMLP(BaseEstimator):
    """Shared parameters, training loop and fitted attributes of the two estimators."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "dtype": [
            StrOptions({"float64", "float32"}),
            Options(type, {np.float64, np.float32}),
        ],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.01,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dtype="float64",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # --- the parameters, in scikit-learn's layout ---------------------------------------

    @property
    def coefs_(self):
        """list of ndarray: ``coefs_[i]`` of shape (n_units[i], n_units[i + 1]).

        The transposes of ``network_.weights``, as views: they read the live parameters
        and writing into them writes into the network.
        """
        check_is_fitted(self)
        return [w.T for w in self.network_.weights]

    @property
    def intercepts_(self):
        """list of ndarray: ``intercepts_[i]`` of shape (n_units[i + 1],).

        ``network_.biases`` themselves (the live arrays).
        """
        check_is_fitted(self)
        return list(self.network_.biases)

    # --- fitting ----------------------------------------------------------------------

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if any(
            isinstance(n, (bool, np.bool_)) or not isinstance(n, Integral) or n <= 0
            for n in sizes
        ):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {sizes}."
            )
        return [int(n) for n in sizes]

    def _np_dtype(self):
        return np.dtype(self.dtype).type

    def _initialize(self, n_features, n_outputs, hidden, rng):
        """Build the network and reset every fitted attribute (a first fit)."""
        self.out_activation_ = self._out_activation()
        self.network_ = Network(
            [n_features, *hidden, n_outputs],
            hidden=ACTIVATIONS[self.activation],
            output=OUTPUTS[self.out_activation_],
            cost=self._cost,
            dtype=np.dtype(self.dtype).name,
            seed=int(rng.randint(_SEED_BOUND)),
        )
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(hidden) + 2
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._init_stopping_state()

    def _init_stopping_state(self):
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
            self._best_params = self._copy_params()
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _copy_params(self):
        net = self.network_
        return [p.copy() for p in net.weights + net.biases]

    def _check_continuation(self, n_outputs, hidden):
        """A warm start or partial_fit must find the network of the previous fit."""
        net = self.network_
        want = (hidden, ACTIVATIONS[self.activation], np.dtype(self.dtype).name)
        have = (net.sizes[1:-1], net.hidden, net.dtype)
        if want != have:
            raise ValueError(
                "warm_start and partial_fit continue the previous fit, so "
                "hidden_layer_sizes, activation and dtype must not change: the network "
                f"has hidden layers {have[0]} of {have[1]!r} units in {have[2]}, the "
                f"parameters ask for {want[0]} of {want[1]!r} units in {want[2]}."
            )
        if n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} outputs, but {type(self).__name__} was fitted with "
                f"{self.n_outputs_} outputs."
            )

    def _fit(self, X, y, incremental):
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "network_") or (
            not self.warm_start and not incremental
        )
        X, Y, y = self._validate_input(X, y, incremental, reset=first_pass)
        rng = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], Y.shape[1], hidden, rng)
        else:
            self._check_continuation(Y.shape[1], hidden)
            if (self.validation_scores_ is not None) != bool(self.early_stopping):
                self._init_stopping_state()
        if not incremental:
            # A call to fit starts a new optimisation (as in sklearn): fresh momentum and
            # a fresh budget of n_iter_no_change epochs; partial_fit keeps both.
            self.network_.reset_momentum()
            self._no_improvement_count = 0
        self._fit_stochastic(X, Y, y, rng, incremental)
        return self

    def _fit_stochastic(self, X, Y, y, rng, incremental):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.early_stopping:
            n_val = math.ceil(self.validation_fraction * X.shape[0])
            if n_val < 2 or n_val >= X.shape[0]:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            stratify = y if self._stratify_split() else None
            X, X_val, Y, _, _, y_val = train_test_split(
                X, Y, y, random_state=rng, test_size=self.validation_fraction,
                stratify=stratify,
            )
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    f"Got batch_size={self.batch_size}, larger than the {n_samples} "
                    "training samples; it is clipped to the number of samples."
                )
            batch_size = min(self.batch_size, n_samples)
        n_batches = math.ceil(n_samples / batch_size)
        net = self.network_
        squared_norm = _squared_norm(net.weights)
        stopped = False
        self.n_iter_ = 0

        def after_epoch(net, history):
            nonlocal squared_norm, stopped
            # sklearn's loss_ adds α/2 ‖W‖² / n_samples once per minibatch, with the
            # weights of that minibatch; the mean of the norms at the start and the end
            # of the epoch stands in for them.
            start, squared_norm = squared_norm, _squared_norm(net.weights)
            mean_norm = (start + squared_norm) / 2
            penalty = 0.5 * self.alpha * n_batches * mean_norm / n_samples
            self.loss_ = self._sklearn_loss(history.train_cost[-1]) + penalty
            self.loss_curve_.append(self.loss_)
            self.n_iter_ += 1
            self.t_ += n_samples
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if self.early_stopping:
                self._update_validation(X_val, y_val)
            else:
                self._update_loss()
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                if self.verbose:
                    print(
                        f"{what} did not improve more than tol={self.tol:f} for "
                        f"{self.n_iter_no_change} consecutive epochs. Stopping."
                    )
                stopped = True
            return stopped

        try:
            net.fit(
                X, Y,
                epochs=1 if incremental else self.max_iter,
                batch_size=batch_size,
                lr=self.learning_rate_init,
                momentum=self.momentum,
                weight_decay=self.alpha / batch_size,
                shuffle=self.shuffle,
                seed=int(rng.randint(_SEED_BOUND)),
                callbacks=[after_epoch],
                progress=False,
            )
        except TrainingDivergedError as err:
            raise TrainingDivergedError(
                f"{type(self).__name__} diverged: the training loss became non-finite in "
                f"epoch {err.epoch} of this call. The parameters were restored to those "
                f"of the epoch before. Try a lower learning_rate_init (now "
                f"{self.learning_rate_init:g}) or momentum, or standardised inputs (e.g. "
                "a StandardScaler in a Pipeline)"
                + ("" if is_classifier(self) else " and targets")
                + ".",
                err.epoch, err.history,
            ) from err
        if self.early_stopping:
            for live, best in zip(net.weights + net.biases, self._best_params):
                np.copyto(live, best)
        if not incremental and not stopped and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                "the optimization hasn't converged yet.",
                ConvergenceWarning,
            )

    def _update_loss(self):
        """sklearn's rule: count the epochs whose loss is not below best_loss_ - tol."""
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]

    def _update_validation(self, X_val, y_val):
        """sklearn's rule on the validation score, keeping the best parameters."""
        score = self._validation_score(X_val, y_val)
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_params = self._copy_params()

    # --- inference --------------------------------------------------------------------

    def _forward(self, X):
        """Validated X fed through the network: the output activations, 2-D."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.dtype(self.network_.dtype).type)
        return self.network_.forward(X)


def _squared_norm(weights):
    return sum(float(np.dot(w.ravel(), w.ravel())) for w in weights)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastbp's minibatch SGD.

    A drop-in for :class:`sklearn.neural_network.MLPClassifier` with
    ``solver="sgd"``: the same parameter names, fitted attributes and stopping rule,
    with the epochs run by fastbp's compiled kernels (see Notes for the differences).

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer; ``()`` gives a
        (multinomial) logistic regression.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Activation of the hidden layers ("logistic" is fastbp's "sigmoid").
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights, as in sklearn: the loss of a minibatch
        of m examples adds α/(2m) Σ‖W‖², so a step adds (α/m) W to the weight gradient.
    batch_size : int or "auto", default="auto"
        Size of the minibatches; "auto" is ``min(200, n_samples)``.
    learning_rate_init : float, default=0.01
        The (constant) learning rate η of SGD. Higher than sklearn's 0.001, which is
        tuned for Adam.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training data).
    shuffle : bool, default=True
        Whether to shuffle the samples in each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the shuffling and the early-stopping split.
        Pass an int for reproducible results across calls.
    tol : float, default=1e-4
        Training stops when the loss (or the validation score with
        ``early_stopping``) has not improved by at least ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs.
    verbose : bool, default=False
        Print the loss (and validation score) after every epoch.
    warm_start : bool, default=False
        Start ``fit`` from the parameters of the previous fit instead of a fresh
        initialisation.
    momentum : float in [0, 1), default=0.9
        Classical momentum μ: v := μ v - η g, w := w + v.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified) and stop when
        the accuracy on it stops improving; the parameters of the best epoch are kept.
    validation_fraction : float in (0, 1), default=0.1
        Share of the training data held out with ``early_stopping``.
    n_iter_no_change : int, default=10
        Number of epochs without improvement by ``tol`` that ends training.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the parameters and of every computation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    loss_ : float
        Loss of the last epoch: mean log-loss plus the L2 penalty.
    best_loss_ : float or None
        Lowest loss reached; None with ``early_stopping``.
    loss_curve_ : list of float
        Loss of every epoch, across warm starts and partial_fit calls.
    validation_scores_ : list of float or None
        Accuracy on the held-out set after every epoch (``early_stopping`` only).
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (``early_stopping`` only).
    t_ : int
        Number of training samples seen.
    coefs_ : list of ndarray
        ``coefs_[i]`` of shape (n_units[i], n_units[i + 1]): the transposes of
        ``network_.weights``, as live views.
    intercepts_ : list of ndarray
        ``intercepts_[i]`` of shape (n_units[i + 1],): ``network_.biases``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.
    n_iter_ : int
        Number of epochs run by the last call to fit (1 after partial_fit).
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of output units: 1 for binary problems, else the number of classes
        (or labels).
    out_activation_ : str
        "softmax" for multiclass, "logistic" for binary and multilabel problems.
    network_ : Network
        The underlying :class:`fastbp.Network`.

    See Also
    --------
    MLPRegressor : The regressor counterpart.
    fastbp.Network : The network and training loop underneath.
    sklearn.neural_network.MLPClassifier : scikit-learn's implementation.

    Notes
    -----
    A multiclass problem gets softmax outputs with the categorical cross-entropy; a
    binary problem one sigmoid unit, and a multilabel problem (y a label indicator
    matrix) one sigmoid unit per label, with the binary cross-entropy: the same losses
    as sklearn. Unlike sklearn, training uses plain SGD with classical (not Nesterov)
    momentum and a constant learning rate, starts from He/LeCun normal weights and zero
    biases, and takes dense input only. Training on a single class is refused. As in
    sklearn, inputs are not scaled: standardise them (e.g. ``StandardScaler``).

    The L2 decay of the last, partial minibatch of an epoch is α / batch_size rather
    than sklearn's α / m (see the module docstring), and the penalty term of ``loss_``
    uses the mean of the squared weight norms at the start and the end of each epoch.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import train_test_split
    >>> from fastbp.estimators import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X / 16, y, random_state=0)
    >>> clf = MLPClassifier((64,), learning_rate_init=0.05, max_iter=50, random_state=0)
    >>> clf = clf.fit(X_train, y_train)
    >>> clf.predict_proba(X_test[:2]).shape
    (2, 10)
    >>> clf.score(X_test, y_test) > 0.95
    True
    """

    _cost = "cross_entropy"

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _stratify_split(self):
        return self._label_binarizer.y_type_ != "multilabel-indicator"

    def _sklearn_loss(self, mean_cost):
        return mean_cost

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, multi_output=True, dtype=self._np_dtype(), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}."
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contain only one class: {self.classes_[0]!r}."
            )
        Y = self._label_binarizer.transform(y).astype(self._np_dtype())
        return X, Y, y

    def _validation_score(self, X_val, y_val):
        return accuracy_score(y_val, self._labels(self.network_.forward(X_val)))

    def _labels(self, out):
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the model to the data X and the class labels y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a label indicator matrix for multilabel classification.

        Returns
        -------
        self : MLPClassifier
            The fitted estimator.

        Examples
        --------
        >>> from fastbp.estimators import MLPClassifier
        >>> X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 10
        >>> y = ["no", "yes", "yes", "no"] * 10
        >>> clf = MLPClassifier((8,), activation="tanh", learning_rate_init=0.1,
        ...                     random_state=0, max_iter=500).fit(X, y)
        >>> clf.predict([[0.0, 1.0], [1.0, 1.0]]).tolist()
        ['yes', 'no']
        """
        return self._fit(X, y, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            The class labels of this chunk.
        classes : array-like of shape (n_classes,), default=None
            All the classes across the calls to partial_fit; required on the first call
            (unless y is a label indicator matrix), ignored afterwards. y need not
            contain every class.

        Returns
        -------
        self : MLPClassifier
            The updated estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbp.estimators import MLPClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 2))
        >>> y = (X[:, 0] > 0).astype(int)
        >>> clf = MLPClassifier((4,), random_state=0)
        >>> for start in range(0, 200, 50):
        ...     clf = clf.partial_fit(X[start:start + 50], y[start:start + 50],
        ...                           classes=[0, 1])
        >>> clf.t_
        200
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_labels)
            The predicted classes (a label indicator matrix for multilabel problems).
        """
        return self._labels(self._forward(X))

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            The probability of each class, in the order of ``classes_`` (two columns
            for a binary problem; one independent probability per label for a
            multilabel problem).

        Examples
        --------
        >>> from fastbp.estimators import MLPClassifier
        >>> clf = MLPClassifier((3,), random_state=0, max_iter=5)
        >>> clf = clf.fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        >>> clf.predict_proba([[1.5]]).sum(axis=1).round(6).tolist()
        [1.0]
        """
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out[:, 0]
            return np.column_stack([1 - p, p])
        return out

    def predict_log_proba(self, X):
        """Logarithm of the probability estimates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastbp's minibatch SGD.

    A drop-in for :class:`sklearn.neural_network.MLPRegressor` with ``solver="sgd"``
    and the squared error: identity outputs with fastbp's quadratic cost
    C = ½ Σ_j (a_j - y_j)², whose gradient is sklearn's (see Notes for the
    differences).

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer; ``()`` gives a
        linear regression.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Activation of the hidden layers ("logistic" is fastbp's "sigmoid").
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights, as in sklearn: the loss of a minibatch
        of m examples adds α/(2m) Σ‖W‖², so a step adds (α/m) W to the weight gradient.
    batch_size : int or "auto", default="auto"
        Size of the minibatches; "auto" is ``min(200, n_samples)``.
    learning_rate_init : float, default=0.01
        The (constant) learning rate η of SGD. Higher than sklearn's 0.001, which is
        tuned for Adam; lower it for targets that are not standardised.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training data).
    shuffle : bool, default=True
        Whether to shuffle the samples in each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the shuffling and the early-stopping split.
        Pass an int for reproducible results across calls.
    tol : float, default=1e-4
        Training stops when the loss (or the validation score with
        ``early_stopping``) has not improved by at least ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs.
    verbose : bool, default=False
        Print the loss (and validation score) after every epoch.
    warm_start : bool, default=False
        Start ``fit`` from the parameters of the previous fit instead of a fresh
        initialisation.
    momentum : float in [0, 1), default=0.9
        Classical momentum μ: v := μ v - η g, w := w + v.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data and stop when the R² on
        it stops improving; the parameters of the best epoch are kept.
    validation_fraction : float in (0, 1), default=0.1
        Share of the training data held out with ``early_stopping``.
    n_iter_no_change : int, default=10
        Number of epochs without improvement by ``tol`` that ends training.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the parameters and of every computation.

    Attributes
    ----------
    loss_ : float
        Loss of the last epoch, as sklearn defines it: half the mean squared error
        (averaged over samples and outputs) plus the L2 penalty.
    best_loss_ : float or None
        Lowest loss reached; None with ``early_stopping``.
    loss_curve_ : list of float
        Loss of every epoch, across warm starts and partial_fit calls.
    validation_scores_ : list of float or None
        R² on the held-out set after every epoch (``early_stopping`` only).
    best_validation_score_ : float or None
        Best of ``validation_scores_`` (``early_stopping`` only).
    t_ : int
        Number of training samples seen.
    coefs_ : list of ndarray
        ``coefs_[i]`` of shape (n_units[i], n_units[i + 1]): the transposes of
        ``network_.weights``, as live views.
    intercepts_ : list of ndarray
        ``intercepts_[i]`` of shape (n_units[i + 1],): ``network_.biases``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when X has string column names.
    n_iter_ : int
        Number of epochs run by the last call to fit (1 after partial_fit).
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of outputs (columns of y).
    out_activation_ : str
        "identity".
    network_ : Network
        The underlying :class:`fastbp.Network`.

    See Also
    --------
    MLPClassifier : The classifier counterpart.
    fastbp.Network : The network and training loop underneath.
    sklearn.neural_network.MLPRegressor : scikit-learn's implementation.

    Notes
    -----
    Training uses plain SGD with classical (not Nesterov) momentum and a constant
    learning rate, starts from He/LeCun normal weights and zero biases, and takes dense
    input only. SGD on the squared error is sensitive to the scale of the inputs and of
    the targets: standardise both (``StandardScaler``,
    ``TransformedTargetRegressor``); a run whose loss becomes non-finite raises
    :class:`fastbp.TrainingDivergedError`.

    fastbp's quadratic cost sums over the outputs while sklearn's squared error
    averages over them; the gradients are the same (sklearn's are those of the sum), and
    ``loss_`` is reported as sklearn defines it. The L2 decay of the last, partial
    minibatch of an epoch is α / batch_size rather than sklearn's α / m (see the module
    docstring), and the penalty term of ``loss_`` uses the mean of the squared weight
    norms at the start and the end of each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp.estimators import MLPRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-2, 2, size=(500, 1))
    >>> y = np.sin(X[:, 0])
    >>> reg = MLPRegressor((32,), activation="tanh", random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.95
    True
    """

    _cost = "quadratic"

    def _out_activation(self):
        return "identity"

    def _stratify_split(self):
        return False

    def _sklearn_loss(self, mean_cost):
        # fastbp: ½ Σ_j (a_j - y_j)², averaged over samples; sklearn also averages over
        # the outputs.
        return mean_cost / self.n_outputs_

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=self._np_dtype(),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = np.asarray(y, dtype=self._np_dtype())
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        return X, Y, Y

    def _validation_score(self, X_val, Y_val):
        return r2_score(Y_val, self.network_.forward(X_val))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the model to the data X and the targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.

        Returns
        -------
        self : MLPRegressor
            The fitted estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbp.estimators import MLPRegressor
        >>> X = np.linspace(-1, 1, 100).reshape(-1, 1)
        >>> Y = np.column_stack([X[:, 0], -X[:, 0]])
        >>> reg = MLPRegressor((), random_state=0).fit(X, Y)
        >>> reg.predict([[0.5]]).round(1).tolist()
        [[0.5, -0.5]]
        """
        return self._fit(X, y, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values.

        Returns
        -------
        self : MLPRegressor
            The updated estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbp.estimators import MLPRegressor
        >>> X = np.linspace(-1, 1, 100).reshape(-1, 1)
        >>> reg = MLPRegressor((8,), random_state=0)
        >>> for _ in range(3):
        ...     reg = reg.partial_fit(X, 2 * X[:, 0])
        >>> len(reg.loss_curve_)
        3
        """
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predict the targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values, of the network's dtype.
        """
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
