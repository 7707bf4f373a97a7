"""The model score: one online model of P(conversion | lead features) per workspace.

Labels arrive late (:mod:`labels`: one example per lead episode). Each workspace has its own
:class:`ScoreModel`, learnt only from that workspace's examples; a new workspace starts
from a PRIOR that needs no data: log-odds = ``model.prior.intercept + per_point * (fit +
engagement)`` from the policy. The default kind, :class:`PriorLogit`, is a logistic
regression whose log-odds is that prior PLUS a learnt correction (weights start at 0 and
are L2-shrunk towards 0, i.e. towards the prior), learnt online with per-feature AdaGrad
steps, so rare one-hots (a seniority, a channel) learn as fast as dense counts. Its
features (:mod:`features`) are built to need no scaler.

Quality is measured prequentially: every example is scored BEFORE the model learns it
into a sliding window (:class:`Health`): label balance, AUC, calibration error, and
warnings when the model learns from one class or has too few labels to leave its prior.

Snapshots are pickles, so they are wrapped in an HMAC-SHA256-signed envelope and the
signature is checked BEFORE anything is unpickled: a snapshot that was not signed with the
key is refused, never loaded. Envelope: ``b"LFM2" | HMAC-SHA256 (32 bytes) | header length
(2 bytes, big-endian) | header (JSON: workspace, version, trained_through) | pickle``; the
HMAC covers everything after itself plus the magic. The header sits outside the pickle so
:meth:`ScoreModel.peek` can read it without unpickling.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leadflow.processors.derived import RuleHit
from leadflow.processors.errors import LeadflowError
from leadflow.processors.features import lead_features
from leadflow.processors.policy import ModelPolicy

if TYPE_CHECKING:
    from leadflow.processors.lead_state import LeadState
    from leadflow.processors.policy import Policy

_MAGIC = b"LFM2"
_SIG_LEN = 32
WINDOW = 500  # prequential examples kept for the health figures
ONE_CLASS_MIN = 20  # a window of this many examples, all one class, is a warning
MODEL_KINDS = frozenset({"linear", "averaged", "arf"})
# The ``averaged`` kind: what ``PriorLogit`` is built with (tuned on northwind only, see
# docs/architecture.md "An averaged learner").
AVERAGED_LR, AVERAGED_AFTER, AVERAGED_WINDOW = 0.03, 200, 1000
DEFAULT_KIND = "linear"


class SnapshotError(LeadflowError):
    """A model snapshot whose signature does not verify (tampered or wrong key)."""


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def prior_logit(features: Mapping[str, float], prior: ModelPolicy) -> float:
    """The prior's log-odds: a line in the rule score (``rules.fit`` + ``rules.engagement``).

    Example:
        >>> round(prior_logit({"rules.fit": 0.6, "rules.engagement": 0.7}, ModelPolicy()), 2)
        -0.1
    """
    points = 100 * (features.get("rules.fit", 0.0) + features.get("rules.engagement", 0.0))
    return prior.prior_intercept + prior.prior_per_point * points


class PriorLogit:
    """Logistic regression on top of a fixed prior, learnt online (AdaGrad, L2 to the prior).

    ``log-odds = prior(x) + bias + sum(w_i * x_i)``. Weights start at 0, so an untrained
    model IS the prior. Each weight has its own AdaGrad step, ``lr / sqrt(1 + sum g^2)``:
    a feature seen rarely (a one-hot) keeps large steps, one seen always (a count) small
    ones. Plain floats in dicts: cheap to pickle, every contribution readable.

    With ``average_after`` (the ``averaged`` model kind) what scores a lead is not the last
    iterate, which moves with every example, but the AVERAGE of the iterates (Polyak
    averaging): for the first ``average_after`` examples the iterate, then the mean of the
    iterates since, equal-weight until it spans ``average_window`` examples and exponential
    (rate ``1 / average_window``) after, so it keeps following a market that changes. The
    error that drives each step is the SERVED (averaged) model's, so the iterate keeps
    moving until the averaged predictions match the labels. ``average_after=None`` (the
    ``linear`` kind) serves the iterate. river has ``optim.Averager``, but river 0.26's
    ``LogisticRegression`` discards what the optimizer's ``step`` returns and predicts with
    its own iterate (measured: identical scores with and without it), hence these lines.

    Example:
        >>> m = PriorLogit(ModelPolicy(prior_intercept=0.0, prior_per_point=0.0))
        >>> m.predict_proba({"seniority=vp": 1.0})
        0.5
        >>> for _ in range(200):
        ...     m.learn({"seniority=vp": 1.0}, True)
        ...     m.learn({"seniority=student": 1.0}, False)
        >>> vp = m.predict_proba({"seniority=vp": 1.0})
        >>> vp > 0.7 > 0.3 > m.predict_proba({"seniority=student": 1.0})
        True
        >>> avg = PriorLogit(ModelPolicy(prior_intercept=0.0, prior_per_point=0.0),
        ...                  average_after=100)
        >>> for _ in range(200):
        ...     avg.learn({"seniority=vp": 1.0}, True)
        ...     avg.learn({"seniority=student": 1.0}, False)
        >>> avg.n, avg.served["seniority=vp"] < avg.weights["seniority=vp"]  # the mean lags
        (400, True)
        >>> avg.predict_proba({"seniority=vp": 1.0}) > 0.65
        True
    """

    def __init__(
        self,
        prior: ModelPolicy,
        *,
        lr: float = 0.05,
        l2: float = 1e-3,
        average_after: int | None = None,
        average_window: int = 1000,
    ) -> None:
        self.prior = prior
        self.lr = lr
        self.l2 = l2
        self.average_after = average_after
        self.average_window = average_window
        self.bias = 0.0
        self.weights: dict[str, float] = {}
        self._g2: dict[str, float] = {}
        self.n = 0
        self.served_bias = 0.0
        self.served: dict[str, float] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A snapshot pickled before averaging existed: it served (and keeps serving) its
        # iterate until ``average_after`` more examples arrive.
        self.__dict__.update(state)
        if "served" not in state:
            self.average_after = None
            self.average_window = 1000
            self.n = 0
            self.served_bias = self.bias
            self.served = dict(self.weights)

    def _averaging(self) -> bool:
        return self.average_after is not None and self.n > self.average_after

    def logit(self, x: Mapping[str, float]) -> float:
        """Prior log-odds plus the served correction (the averaged one once averaging)."""
        if not self._averaging():
            bias, weights = self.bias, self.weights
        else:
            bias, weights = self.served_bias, self.served
        z = prior_logit(x, self.prior) + bias
        return z + math.fsum(weights.get(k, 0.0) * v for k, v in x.items())

    def predict_proba(self, x: Mapping[str, float]) -> float:
        """P(conversion), from the served weights."""
        return _sigmoid(self.logit(x))

    def learn(self, x: Mapping[str, float], label: bool) -> None:
        """One AdaGrad step on the served model's log-loss of ``(x, label)``; then average."""
        err = self.predict_proba(x) - float(label)
        for k, v in (("", 1.0), *x.items()):
            if v == 0.0:
                continue
            w = self.bias if k == "" else self.weights.get(k, 0.0)
            g = err * v + (0.0 if k == "" else self.l2 * w)
            acc = self._g2.get(k, 0.0) + g * g
            self._g2[k] = acc
            w -= self.lr * g / math.sqrt(1.0 + acc)
            if k == "":
                self.bias = w
            else:
                self.weights[k] = w
        self.n += 1
        if self.average_after is None or self.n <= self.average_after:
            self.served_bias, self.served = self.bias, dict(self.weights)
            return
        rate = max(1.0 / (self.n - self.average_after), 1.0 / self.average_window)
        for k, w in self.weights.items():
            avg = self.served.get(k, 0.0)
            self.served[k] = avg + rate * (w - avg)
        self.served_bias += rate * (self.bias - self.served_bias)

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        """Each feature's log-odds contribution (served ``w * x``), plus the prior's and bias'.

        Pairs, not :class:`RuleHit`: a score ranks every feature and keeps five.
        """
        if not self._averaging():
            bias, weights = self.bias, self.weights
        else:
            bias, weights = self.served_bias, self.served
        out = [("prior", prior_logit(x, self.prior) + bias)]
        out.extend((k, weights.get(k, 0.0) * v) for k, v in x.items())
        return out


class _RiverForest:
    """river's adaptive random forest on the same features (kept to measure interactions)."""

    def __init__(self) -> None:
        from river import forest

        self.forest: Any = forest.ARFClassifier(n_models=10, grace_period=50, seed=7)

    def predict_proba(self, x: Mapping[str, float]) -> float:
        return float(self.forest.predict_proba_one(dict(x)).get(True, 0.5))

    def learn(self, x: Mapping[str, float], label: bool) -> None:
        self.forest.learn_one(dict(x), label)

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        return []  # a forest has no cheap per-feature explanation


def auc_exact(pairs: list[tuple[float, bool]]) -> float | None:
    """ROC AUC (Mann-Whitney, ties count one half); ``None`` without both classes.

    Example:
        >>> auc_exact([(0.1, False), (0.4, False), (0.35, True), (0.8, True)])
        0.75
        >>> auc_exact([(0.3, False), (0.2, False)]) is None
        True
    """
    positives = sum(1 for _, y in pairs if y)
    negatives = len(pairs) - positives
    if positives == 0 or negatives == 0:
        return None
    ranked = sorted(pairs, key=lambda pair: pair[0])
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(1 for _, y in ranked[i:j] if y)
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def ece(pairs: list[tuple[float, bool]], bins: int = 10) -> float | None:
    """Expected calibration error: mean |predicted - observed| over equal-width bins.

    Example:
        >>> ece([(0.2, False)] * 8 + [(0.2, True)] * 2)
        0.0
        >>> ece([]) is None
        True
    """
    if not pairs:
        return None
    sums: list[list[float]] = [[0.0, 0.0, 0.0] for _ in range(bins)]
    for p, y in pairs:
        b = sums[min(bins - 1, int(p * bins))]
        b[0] += 1
        b[1] += p
        b[2] += float(y)
    return round(sum(abs(b[1] - b[2]) for b in sums if b[0]) / len(pairs), 6)


@dataclass(frozen=True, slots=True)
class Health:
    """A workspace model's health: what the user must see to trust its scores.

    ``window_*`` figures are over the last :data:`WINDOW` prequential examples; AUC is
    ``None`` ("not yet measurable") until the window holds both classes.
    """

    workspace_id: str
    model_version: str
    n_learned: int
    positives: int
    negatives: int
    window: int
    window_positive_rate: float | None
    window_auc: float | None
    window_ece: float | None
    warnings: tuple[str, ...]

    def as_log(self) -> dict[str, object]:
        """Key/values for a structured log line."""
        return {
            "workspace_id": self.workspace_id,
            "model_version": self.model_version,
            "n_learned": self.n_learned,
            "positives": self.positives,
            "negatives": self.negatives,
            "window": self.window,
            "window_positive_rate": self.window_positive_rate,
            "window_auc": "not yet measurable" if self.window_auc is None else self.window_auc,
            "window_ece": self.window_ece,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What :meth:`ScoreModel.peek` reads without unpickling (not verified)."""

    workspace_id: str
    version: str
    trained_through: int


class ScoreModel:
    """One workspace's model: a :class:`PriorLogit` (or a forest), and its health.

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> m = ScoreModel(load_default_policy(), "ws")
        >>> hot = {"rules.fit": 0.8, "rules.engagement": 0.6, "seniority=vp": 1.0}
        >>> cold = {"rules.fit": 0.05, "rules.engagement": 0.02, "email=free": 1.0}
        >>> m.predict(hot) > m.predict(cold)   # the prior alone already ranks by the rules
        True
        >>> m.health().window_auc is None, m.health().warnings
        (True, ('few_labels',))
        >>> for _ in range(60):
        ...     _ = m.learn(hot, True)
        ...     _ = m.learn(cold, False)
        >>> m.n_learned, m.health().window_auc, m.health().warnings
        (120, 1.0, ())
    """

    def __init__(
        self, policy: Policy | None = None, workspace_id: str = "", *, kind: str = DEFAULT_KIND
    ) -> None:
        if kind not in MODEL_KINDS:
            raise LeadflowError(f"unknown model kind {kind!r}; one of {sorted(MODEL_KINDS)}")
        self.name = kind
        self.workspace_id = workspace_id
        self.prior = policy.model if policy is not None else ModelPolicy()
        self.estimator: PriorLogit | _RiverForest
        if kind == "linear":
            self.estimator = PriorLogit(self.prior)
        elif kind == "averaged":
            self.estimator = PriorLogit(
                self.prior,
                lr=AVERAGED_LR,
                average_after=AVERAGED_AFTER,
                average_window=AVERAGED_WINDOW,
            )
        else:
            self.estimator = _RiverForest()
        self.window: deque[tuple[float, bool]] = deque(maxlen=WINDOW)
        self.positives = 0
        self.negatives = 0
        self.n_learned = 0

    @property
    def version(self) -> str:
        """``name@examples-learned``: identifies the weights a score came from."""
        return f"{self.name}@{self.n_learned}"

    def features(self, state: LeadState, at_ms: int, policy: Policy) -> dict[str, float]:
        """The lead's features at event time ``at_ms`` (:func:`features.lead_features`)."""
        return lead_features(state, at_ms, policy)

    def predict(self, features: Mapping[str, float]) -> float:
        """P(conversion) of this workspace's lead; the prior's until labels arrive."""
        return self.estimator.predict_proba(features)

    def learn(self, features: Mapping[str, float], label: bool) -> float:
        """Score first (prequential, into the health window), then learn. Returns that score."""
        p = self.predict(features)
        self.window.append((p, label))
        self.positives += label
        self.negatives += not label
        self.estimator.learn(features, label)
        self.n_learned += 1
        return p

    def health(self) -> Health:
        """Label balance, sliding-window AUC and calibration, and warnings.

        Warnings: ``one_class`` (the window holds :data:`ONE_CLASS_MIN`+ examples of one
        class only: it learns that everything is a negative, or a positive),
        ``few_labels`` (fewer than ``model.min_labels`` examples of a class: its scores are
        still mostly the prior).
        """
        pairs = list(self.window)
        pos = sum(1 for _, y in pairs if y)
        warnings: list[str] = []
        if len(pairs) >= ONE_CLASS_MIN and pos in (0, len(pairs)):
            warnings.append("one_class")
        if min(self.positives, self.negatives) < self.prior.min_labels:
            warnings.append("few_labels")
        auc = auc_exact(pairs)
        calibration = ece(pairs)
        return Health(
            workspace_id=self.workspace_id,
            model_version=self.version,
            n_learned=self.n_learned,
            positives=self.positives,
            negatives=self.negatives,
            window=len(pairs),
            window_positive_rate=round(pos / len(pairs), 4) if pairs else None,
            window_auc=None if auc is None else round(auc, 4),
            window_ece=None if calibration is None else round(calibration, 4),
            warnings=tuple(warnings),
        )

    def top_features(self, features: Mapping[str, float], n: int = 5) -> tuple[RuleHit, ...]:
        """The ``n`` largest log-odds contributions by magnitude (the prior is one of them)."""
        contrib = [
            (-abs(p := round(w, 4)), rule, p) for rule, w in self.estimator.contributions(features)
        ]
        contrib.sort()
        return tuple(RuleHit(rule, p) for _, rule, p in contrib[:n] if p != 0)

    def snapshot(self, key: bytes, *, trained_through: int = 0) -> bytes:
        """Signed bytes for ``leadflow.models`` (see the module doc for the envelope)."""
        header = json.dumps(
            {"workspace": self.workspace_id, "version": self.version, "through": trained_through},
            sort_keys=True,
        ).encode()
        signed = (
            len(header).to_bytes(2, "big")
            + header
            + pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)
        )
        sig = hmac.new(key, _MAGIC + signed, hashlib.sha256).digest()
        return _MAGIC + sig + signed

    @staticmethod
    def peek(data: bytes) -> SnapshotHeader:
        """The snapshot's header; nothing is unpickled and nothing verified.

        Use it only to decide whether :meth:`restore` is needed.

        Raises:
            SnapshotError: not a snapshot envelope.
        """
        head = len(_MAGIC) + _SIG_LEN
        if len(data) < head + 2 or not data.startswith(_MAGIC):
            raise SnapshotError("not a leadflow model snapshot")
        n = int.from_bytes(data[head : head + 2], "big")
        try:
            fields = json.loads(data[head + 2 : head + 2 + n])
            return SnapshotHeader(
                str(fields["workspace"]), str(fields["version"]), int(fields["through"])
            )
        except (ValueError, KeyError, TypeError):
            raise SnapshotError("snapshot header is not readable") from None

    @staticmethod
    def peek_version(data: bytes) -> str:
        """The snapshot's model version (see :meth:`peek`)."""
        return ScoreModel.peek(data).version

    @classmethod
    def restore(cls, data: bytes, key: bytes) -> ScoreModel:
        """Verify the signature, and only then unpickle.

        Raises:
            SnapshotError: wrong magic, wrong key or tampered bytes.
        """
        head = len(_MAGIC) + _SIG_LEN
        if len(data) < head + 2 or not data.startswith(_MAGIC):
            raise SnapshotError("not a leadflow model snapshot")
        sig, signed = data[len(_MAGIC) : head], data[head:]
        expected = hmac.new(key, _MAGIC + signed, hashlib.sha256).digest()
        if not hmac.compare_digest(sig, expected):
            raise SnapshotError("model snapshot signature does not verify; refusing to load")
        body = signed[2 + int.from_bytes(signed[:2], "big") :]
        attrs: dict[str, Any] = pickle.loads(body)  # noqa: S301 - signature verified above
        model = cls.__new__(cls)
        model.__dict__.update(attrs)
        return model


class ModelRegistry:
    """The models of every workspace a process serves, one per workspace, created on demand.

    A workspace's model is built from the workspace's policy and learns only from examples
    whose ``workspace_id`` is that workspace: nothing is shared between workspaces but the
    code (the prior comes from the policy, not from data).

    Example:
        >>> from leadflow.processors.policy_load import load_default_policy
        >>> r = ModelRegistry(lambda ws: load_default_policy())
        >>> _ = r.learn("a", {"rules.fit": 0.9}, True)
        >>> r.get("a").n_learned, r.get("b").n_learned
        (1, 0)
    """

    def __init__(self, policy_of: Any, *, kind: str = DEFAULT_KIND) -> None:
        self._policy_of = policy_of
        self.kind = kind
        self.models: dict[str, ScoreModel] = {}

    def get(self, workspace_id: str) -> ScoreModel:
        """The workspace's model (its prior alone if it never learnt)."""
        model = self.models.get(workspace_id)
        if model is None:
            model = ScoreModel(self._policy_of(workspace_id), workspace_id, kind=self.kind)
            self.models[workspace_id] = model
        return model

    def prior(self, workspace_id: str) -> ScoreModel:
        """A model that never learnt: what a workspace without a snapshot is scored with."""
        return ScoreModel(self._policy_of(workspace_id), workspace_id, kind=self.kind)

    def learn(self, workspace_id: str, features: Mapping[str, float], label: bool) -> float:
        """Teach the workspace's model one example; returns its prequential score."""
        return self.get(workspace_id).learn(features, label)


__all__ = [
    "DEFAULT_KIND",
    "MODEL_KINDS",
    "Health",
    "ModelRegistry",
    "PriorLogit",
    "ScoreModel",
    "SnapshotError",
    "SnapshotHeader",
    "auc_exact",
    "ece",
    "prior_logit",
]
