"""``manifest.json``: the typed record of one registry version (what produced it, how it scored).

Every layer that reads a version (``models.load``, serving, evaluation, ``raytrade promote``) reads
it through :func:`read_manifest`, so a malformed or hand-edited manifest is refused in one place,
with one line naming the file and the field, before anything trusts it.

Design decisions
----------------
* Frozen pydantic models, ``extra="forbid"``: a key this code does not know is an error, not
  something silently carried along. The JSON keys are those ``raytrade promote`` always wrote.
* ``config`` (RLlib's algorithm config) and ``params`` (the searched values) stay free-form JSON
  objects: they are RLlib's and the spec's vocabulary, not ours; the parts we act on are typed
  (:meth:`Manifest.env_config`).
* Secrets: :func:`scrub_secrets` runs on every manifest before validation (a ``before`` validator),
  so no construction path can put an entry whose key names a key, token, secret or password into a
  manifest, however deep in ``config``.
* ``code_version``, ``libraries`` and ``data.sha256``/``data.files`` are the training run's
  (recorded by ``raytrade tune`` when the search started, see :class:`Provenance`); ``created_at``
  is when the version was promoted, ``trained_at`` when its search started.
* ``schema_version``: 1 for the manifests written before the field existed (absent: read as 1), 2
  once ``selection`` may be present (:data:`MANIFEST_SCHEMA_VERSION`, what promotion writes). A
  manifest of a later version is refused, naming the field, rather than half-read.
* ``selection`` (a :class:`Selection`): when the version was promoted by ``raytrade select``, the
  comparison that chose it (every candidate's score and paired bootstrap intervals, the window, the
  store fingerprint); ``None`` when promoted from one search.
* ``book_end`` (:data:`BookEnd`): every recorded score says how it treated the book held at its
  window's last bar: the search's (``objective.book_end``, for ``search_metrics`` and a selection
  candidate's ``search_objective``), the promotion's re-score (``metrics_book_end``) and a
  selection's (``Selection.book_end``). Scores are compared only under one rule; a record written
  before the field existed was marked to market and reads ``"marked"``, so it is neither refused nor
  misread, and its signature stays valid (a field at its default is not signed).
* ``signature`` (a :class:`ManifestSignature`): with a registry key, the HMAC of the whole manifest
  (every field but ``signature.hmac``, ``models.registry.manifest_mac``) and the scheme that made it
  (:data:`MAC_SCHEME`). ``files_hmac`` is the first scheme's MAC (name, version and file hashes
  only: the rest of the manifest unprotected); it is still read, never written, and refused by a
  loader holding the key (``models.registry.verify_mac``) until the version is re-signed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raytrade.envs.cash_rate import CashRate
from raytrade.envs.config import PortfolioEnvConfig, env_config_from_dict
from raytrade.envs.evaluation.stats import BootstrapConfig
from raytrade.models.regular_file import read_regular
from raytrade.replay.behaviour import BehaviourPolicy
from raytrade.replay.errors import InputError

MANIFEST: Final = "manifest.json"
MANIFEST_MAX_BYTES: Final = 16 * 1024 * 1024
"""The largest ``manifest.json`` read (a manifest is a few KiB; a bigger one is refused unread)."""
MANIFEST_SCHEMA_VERSION: Final = 2
"""The manifest schema this code writes (see the module docstring)."""
MAC_SCHEME: Final = 2
"""The registry MAC scheme this code writes and accepts: 2, an HMAC of the whole manifest
(``models.registry.manifest_mac``). Scheme 1 was ``files_hmac`` (name, version and file hashes only)."""
_SECRET_KEY = re.compile(r"(api_?key|secret|token|password|passwd|credential)", re.IGNORECASE)
_DOC = ConfigDict(frozen=True, extra="forbid")

Scores = dict[str, float | None]
"""Metric name -> value; ``None`` where a ratio is undefined (e.g. a policy that never trades)."""
BookEnd = Literal["marked", "closed"]
"""How a score treated the book still held at its window's last bar: ``"closed"``, traded to zero
there with the simulator's cost model and the exit charged to the last return (``envs.rollout``'s
``close_at_end``; the tuning objective's rule, ``tune_specs.objective.CLOSE_AT_END``); ``"marked"``,
marked to market (every score recorded before that rule: a record without the field reads so)."""
_BOOK_END_ABSENT: Final = "marked"


class ManifestError(InputError):
    """A ``manifest.json`` that is missing, not JSON, or not a manifest (names the file and field)."""


def scrub_secrets(value: Any) -> Any:
    """``value`` as strict-JSON data: every mapping entry whose key names a secret removed and
    non-finite floats (undefined ratios) written as ``null`` (recursively)."""
    if isinstance(value, Mapping):
        return {k: scrub_secrets(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub_secrets(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ExperienceWindow(BaseModel):
    """The dates an offline run read its experience from (``tune_specs.offline.experience_window``):
    the transitions decided on the training window's bars but its last, so that each one's next
    observation lies in the window too, how many the table held in it and outside it, and the
    divisor of the rewards the learner read."""

    model_config = _DOC

    train_start: datetime = Field(description="first bar of the training window (UTC)")
    train_end: datetime = Field(description="last bar of the training window (UTC)")
    start: datetime = Field(description="first decision read (UTC, inclusive)")
    end: datetime = Field(description="last decision read (UTC, inclusive): the bar before train_end")
    transitions: int = Field(ge=0, description="transitions in the window when the search started")
    left_out: int = Field(ge=0, description="transitions outside it (not read) when the search started")
    reward_scale: float | None = Field(
        None,
        gt=0,
        description="what the learner divided every reward by: the standard deviation of the rewards "
        "of the transitions in the window (1.0 when they do not vary; tune_specs.offline.reward_scale); "
        "None: recorded before rewards were scaled (the learner read them as logged)",
    )
    reward_outlier: str | None = Field(
        None,
        description="the reward of the window farthest from the others, when more than "
        "replay.experience.REWARD_OUTLIER_SCALES robust scales from their median (a bad bar, an "
        "unadjusted split: it widens reward_scale and the learner clones it); None: none that far",
    )


class TrainWindow(BaseModel):
    """The first and last bar of one of a search's windows (its env config's train or validation split
    on its store as the search started): a warm start from the version checks its training window
    against its own validation window (``tune_specs.init_weights.check_training_window``), and an
    evaluation checks both against the windows it scores (``models.training_window``), whatever the
    store became since."""

    model_config = _DOC

    start: datetime = Field(description="first bar of the training window (UTC)")
    end: datetime = Field(description="last bar of the training window (UTC)")


class ExperienceFingerprint(BaseModel):
    """The experience an offline run learnt from: its store, the fingerprint of its ``experience``
    table at the start (``replay.fingerprint.data_fingerprint(root, EXPERIENCE_TABLES)``), the
    window of it that was read and the behaviour policies that recorded it (their training windows
    extend the offline version's: ``models.training_window``)."""

    model_config = _DOC

    root: str = Field(description="experience store root (--experience, else the replay store)")
    sha256: str = Field(description="fingerprint of its experience table")
    files: int = Field(ge=0, description="experience files the fingerprint covers")
    window: ExperienceWindow | None = Field(
        None, description="the dates read (None: a run older than the window, which read every date)"
    )
    behaviour: list[BehaviourPolicy] | None = Field(
        None,
        description="the registry policies that recorded the simulated transitions read, and the bars "
        "their weights saw (replay.behaviour; empty: none; None: a run older than the field)",
    )


class InitValidation(BaseModel):
    """The ``--init`` version of a search whose checkpoint was chosen on this search's validation window
    (``tune_specs.init_weights.validation_overlap``): the search starts from the best of that version's
    comparisons on the bars it is scored on, so a claim about its winner must count them too
    (``raytrade select``'s Bonferroni N)."""

    model_config = _DOC

    version: str = Field(description="registry:NAME@VERSION the search started from")
    validation_window: TrainWindow = Field(description="the window its checkpoint was chosen on (UTC)")
    checkpoints_compared: int | None = Field(
        None,
        ge=1,
        description="checkpoints compared on that window to choose it (its selection's N, else its "
        "search's leaderboard, its own --init's included); None: not recorded or not reachable",
    )


class Provenance(BaseModel):
    """What a training run depended on, recorded when the run started (``raytrade tune``)."""

    model_config = _DOC

    started_at: datetime = Field(description="when the search started (UTC)")
    code_version: str = Field(description="git commit of the code (+dirty with local changes) or unknown")
    code_sha256: str | None = Field(
        None,
        description="models.registry.code_fingerprint: SHA-256 of the package's .py sources (None: a "
        "run older than the record)",
    )
    libraries: dict[str, str] = Field(description="versions of python, ray, torch, numpy, pandas, pyarrow")
    data_sha256: str = Field(description="replay.fingerprint.data_fingerprint of the store at the start")
    data_files: int = Field(ge=0, description="bars + features files the fingerprint covers")
    experience: ExperienceFingerprint | None = Field(
        None, description="offline specs: the experience they learnt from (None: an online spec)"
    )
    train_window: TrainWindow | None = Field(
        None, description="replay data: the training window as the search started (None: older runs)"
    )
    validation_window: TrainWindow | None = Field(
        None,
        description="replay data: the validation window as the search started, where checkpoints were "
        "chosen (None: older runs)",
    )
    init_validation: InitValidation | None = Field(
        None,
        description="--init from a version whose checkpoint was chosen on this validation window (None: "
        "no --init, one chosen elsewhere, or a run older than the field)",
    )


class ManifestSource(BaseModel):
    """The search and trial a version was copied from."""

    model_config = _DOC

    run: str = Field(description="tune run folder")
    spec: str
    family: str
    trial: str
    checkpoint: str = Field(description="checkpoint folder, relative to the run folder")
    iteration: int = Field(ge=0)


class ManifestData(BaseModel):
    """The data the policy was trained and scored on."""

    model_config = _DOC

    kind: str = Field(description="replay or synthetic")
    root: str | None = Field(None, description="replay store root (replay data only)")
    sha256: str = Field(description="replay: the training-time data fingerprint; synthetic: config hash")
    files: int = Field(ge=0, description="files the fingerprint covers (0 for synthetic data)")
    symbols: list[str] = Field(description="the universe, in the policy's asset order")
    experience: ExperienceFingerprint | None = Field(
        None, description="offline specs: the training run's experience fingerprint"
    )
    train_window: TrainWindow | None = Field(
        None, description="replay data: the training window as the search started (None: older versions)"
    )
    validation_window: TrainWindow | None = Field(
        None,
        description="replay data: the validation window as the search started, where its checkpoint was "
        "chosen (None: older versions)",
    )


class ManifestFeatures(BaseModel):
    """The observation layout; ``sha256`` over the other fields (models.registry.feature_spec_hash)."""

    model_config = _DOC

    observed: list[str] = Field(description="feature columns observed, in order")
    loader_columns: list[str] = Field(description="the replay loader's full column list")
    flat_obs: bool
    portfolio_state: int = Field(ge=0, description="portfolio-state entries appended to observations")
    sha256: str


class SearchObjective(BaseModel):
    """How the search scored trials (the run file's ``objective``)."""

    model_config = _DOC

    metric: str
    mode: str
    cvar_penalty: float = Field(ge=0)
    book_end: BookEnd = Field(
        _BOOK_END_ABSENT,
        description="how the search scored the book held at the window's last bar (BookEnd); absent: "
        "'marked', a search recorded before the objective closed the book",
    )


class ScoreInterval(BaseModel):
    """A score difference and its paired bootstrap interval (``envs.evaluation.stats.DifferenceCI``)."""

    model_config = _DOC

    estimate: float = Field(description="the difference on the window itself")
    low: float | None = Field(description="lower bound; None when no resampled path was defined")
    high: float | None = Field(description="upper bound; None when no resampled path was defined")
    n_valid: int = Field(ge=0, description="resampled paths on which both scores were defined")


class SelectionWindow(BaseModel):
    """The window every candidate of a selection was replayed on, and the store it came from."""

    model_config = _DOC

    split: str = Field(description="replay split (validation)")
    start: datetime = Field(description="first bar of the window (UTC)")
    end: datetime = Field(description="last bar of the window (UTC)")
    bars: int = Field(ge=2)
    symbols: list[str] = Field(description="the universe, in the replay's asset order")
    store_sha256: str = Field(description="replay.fingerprint.data_fingerprint of the store")
    store_files: int = Field(ge=0, description="files the fingerprint covers")


class BehaviourComparison(BaseModel):
    """An offline candidate against one behaviour policy of the experience it learnt from, on the
    selection window (``cluster.select_behaviour``): did it learn anything beyond that policy?"""

    model_config = _DOC

    policy: str = Field(
        description="the experience rows' policy_version (a baseline's name, or NAME@VERSION)"
    )
    runs: int = Field(ge=1, description="recording runs of this policy among the transitions read")
    objective: float | None = Field(
        None, description="the behaviour policy's own objective on the window (None: not replayed)"
    )
    difference: ScoreInterval | None = Field(
        None,
        description="the candidate's objective minus the behaviour policy's, paired bootstrap "
        "(tune_specs.selection.versus_baseline); None: not replayed, see not_run",
    )
    not_run: str | None = Field(None, description="why it was not replayed (None: it was)")
    level: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="two-sided level of difference's interval: the winner's claim's Bonferroni-adjusted "
        "level for adjusted_for checkpoints, or the nominal bootstrap.level when adjusted_for is None "
        "(None: a selection written before, nominal)",
    )
    adjusted_for: int | None = Field(
        None,
        ge=1,
        description="the checkpoints compared on the window that the interval is adjusted for (the "
        "claim's N); None: unknown (a leaderboard without the count) or a selection written before, and "
        "then no verdict 'above' is made",
    )

    @model_validator(mode="after")
    def _either(self) -> BehaviourComparison:
        if (self.difference is None) == (self.not_run is None):
            raise ValueError("a behaviour comparison has either a difference or the reason it has none")
        return self


class BehaviourInSample(BaseModel):
    """A behaviour policy of an offline run's experience that saw bars of its held-out splits
    (``replay.behaviour.splits_seen``): the run learnt what that policy knew, so its scores on those
    splits are in sample, whatever window its own learner read."""

    model_config = _DOC

    policy: str = Field(description="the behaviour policy (NAME@VERSION) as described where recorded")
    described: str = Field(description="replay.behaviour.describe of its record: its windows and how known")
    seen_until: datetime | None = Field(
        description="the last bar its weights saw or were chosen on (UTC); None: unknown"
    )
    splits: list[Literal["validation", "test"]] = Field(
        min_length=1, description="the held-out splits whose bars it saw: scores there are in sample"
    )


class SelectionCandidate(ManifestSource):
    """One search's best checkpoint (where it came from, as a version's source), replayed on the
    selection window."""

    objective: float = Field(description="the project objective on the window (tune_specs.objective)")
    search_objective: float | None = Field(description="the objective the search recorded for it")
    search_book_end: BookEnd = Field(
        _BOOK_END_ABSENT,
        description="how search_objective treated the book at the window's end (its run's "
        "objective.book_end); it equals objective only when this is the selection's book_end",
    )
    checkpoints_compared: int | None = Field(
        None,
        ge=1,
        description="checkpoints its search compared on this window to pick it (every trial's, from the "
        "run's leaderboard); None: the leaderboard does not say (an older run), or recorded before",
    )
    vs_winner: ScoreInterval = Field(description="objective minus the winner's, paired bootstrap")
    vs_benchmark: ScoreInterval = Field(description="objective minus the benchmark's (0), bootstrap")
    excess_return: float | None = Field(description="total return minus the benchmark's")
    gross_exposure: float | None = Field(description="mean sum |w| of the target weights per bar")
    turnover: float | None = Field(description="mean traded notional / equity per bar")
    costs: float | None = Field(description="total costs paid / initial equity")
    vs_behaviour: list[BehaviourComparison] | None = Field(
        None,
        description="an offline candidate against each behaviour policy of its experience (None: an "
        "online candidate, one whose behaviour policies are unknown, see behaviour_unknown, or a "
        "selection written before)",
    )
    behaviour_unknown: str | None = Field(
        None, description="an offline candidate whose behaviour policies could not be read: why"
    )
    behaviour_in_sample: list[BehaviourInSample] | None = Field(
        None,
        description="an offline candidate's behaviour policies that saw bars of this window or the test "
        "split (None: none did, an online candidate, or a selection written before)",
    )


class SelectionClaim(BaseModel):
    """Whether the winner beats the benchmark, with intervals adjusted for the candidates it was picked
    from on this same window (``tune_specs.selection.benchmark_claim``): every checkpoint the searches
    compared on it, and the choice among the runs' winners (already among them)."""

    model_config = _DOC

    candidates: int = Field(ge=1, description="candidates the winner was picked from on this window")
    counted: Literal["checkpoints", "runs"] = Field(
        "runs",
        description="what ``candidates`` counts: 'checkpoints', every checkpoint the searches compared on "
        "the window (each candidate's checkpoints_compared, summed); 'runs', one per run (a selection "
        "written before the count, whose adjustment left out each search's own choice)",
    )
    level: float = Field(
        gt=0, lt=1, description="two-sided level of both intervals: 1 - (1 - bootstrap.level) / candidates"
    )
    objective: ScoreInterval = Field(description="the winner's objective against the benchmark (0)")
    sharpe: ScoreInterval | None = Field(
        description="sharpe(winner) - sharpe(benchmark), own net returns; None where either is undefined"
    )
    beats: bool = Field(description="both intervals' lower bounds lie above 0")


class Selection(BaseModel):
    """``raytrade select``'s comparison: the candidates best first, the first is the winner."""

    model_config = _DOC

    window: SelectionWindow
    benchmark: str = Field(description="the allocation the excess returns are measured against")
    cvar_penalty: float = Field(ge=0, description="the objective's CVaR weight")
    book_end: BookEnd = Field(
        _BOOK_END_ABSENT,
        description="how every candidate's objective and interval treated the book at the window's "
        "end (BookEnd; absent: 'marked', a selection written before the objective closed it)",
    )
    bootstrap: BootstrapConfig
    cash_rate: CashRate = Field(
        default_factory=CashRate,
        description="what idle cash earned on the window, every candidate's and the benchmark's alike: "
        "the Sharpe ratios and the claim's Sharpe difference are over it (absent: read as 0 %, a "
        "selection written before select recorded the rate; its runs' env configs hold the rate they "
        "were searched at)",
    )
    winner: str = Field(description="run folder of the winning candidate")
    candidates: list[SelectionCandidate] = Field(min_length=1, description="best first")
    claim: SelectionClaim | None = Field(
        None,
        description="the winner against the benchmark, Bonferroni-adjusted (None: not made, see "
        "claim_refused, or written before)",
    )
    claim_refused: str | None = Field(
        None, description="why no claim was made (a candidate's checkpoint count unknown); None: made"
    )

    @model_validator(mode="after")
    def _winner_first(self) -> Selection:
        if self.candidates[0].run != self.winner:
            raise ValueError(f"winner {self.winner!r} is not the first candidate {self.candidates[0].run!r}")
        if self.claim is not None and self.claim_refused is not None:
            raise ValueError("a selection has either a claim or the reason it was refused, not both")
        return self


class ManifestSignature(BaseModel):
    """The registry key's HMAC of a manifest (``models.registry.sign_manifest``)."""

    model_config = _DOC

    scheme: int = Field(
        ge=MAC_SCHEME, le=MAC_SCHEME, description="what the MAC covers (MAC_SCHEME: the whole manifest)"
    )
    hmac: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="HMAC-SHA256 (hex) of the canonical manifest without this field "
        "(models.registry.manifest_mac)",
    )


class Manifest(BaseModel):
    """One registry version's ``manifest.json``."""

    model_config = _DOC

    name: str = Field(description="policy name (the registry folder)")
    version: int = Field(ge=1)
    created_at: datetime = Field(description="when the version was promoted (UTC)")
    trained_at: datetime = Field(description="when its search started (UTC)")
    source: ManifestSource
    data: ManifestData
    features: ManifestFeatures
    n_assets: int = Field(ge=1)
    params: dict[str, Any] = Field(description="the searched hyperparameters of the trial")
    config: dict[str, Any] = Field(description="RLlib's algorithm config of the trial (JSON)")
    code_version: str = Field(description="code the policy was trained with")
    code_sha256: str | None = Field(
        None,
        description="the search's Provenance.code_sha256 (models.registry.code_fingerprint of the code "
        "it was trained with; None: a search or version older than the record; unsigned at None)",
    )
    libraries: dict[str, str] = Field(description="library versions the policy was trained with")
    flops_per_decision: int = Field(ge=0, description="multiply-adds of one decision (B = 1)")
    objective: SearchObjective
    metrics: dict[str, Scores] = Field(description="split (validation, test) -> scores of these weights")
    metrics_book_end: BookEnd = Field(
        _BOOK_END_ABSENT,
        description="how metrics treated the book at each window's end (BookEnd; absent: 'marked', a "
        "version promoted before the objective closed it); search_metrics' rule is objective.book_end",
    )
    search_metrics: Scores = Field(description="the scores the search recorded for the checkpoint")
    metrics_in_sample: list[BehaviourInSample] | None = Field(
        None,
        description="an offline version's behaviour policies that saw bars of the splits of metrics: its "
        "metrics on those splits are in sample, not out-of-sample results (None: none did)",
    )
    command: str = Field(description="the raytrade tune command of the search")
    reproduce: str
    files: dict[str, str] | None = Field(
        None, description="sha256 of every file of the version (path relative to it), when recorded"
    )
    files_hmac: str | None = Field(
        None,
        description="legacy MAC scheme 1: HMAC-SHA256 (hex) of name, version and files only; read, never "
        "written, refused under a registry key until re-signed (raytrade registry sign)",
    )
    schema_version: int = Field(
        1, ge=1, le=MANIFEST_SCHEMA_VERSION, description="manifest schema (absent: 1, the first)"
    )
    selection: Selection | None = Field(
        None, description="the comparison across searches that chose this version (raytrade select)"
    )
    signature: ManifestSignature | None = Field(
        None, description="the registry key's HMAC of this whole manifest, when signed with one"
    )

    @model_validator(mode="before")
    @classmethod
    def _scrub(cls, data: Any) -> Any:
        return scrub_secrets(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _selection_needs_v2(self) -> Manifest:
        if self.selection is not None and self.schema_version < 2:
            raise ValueError(f"selection needs schema_version >= 2, got {self.schema_version}")
        return self

    def env_config(self) -> PortfolioEnvConfig:
        """The env config the policy was trained with; a ``GatedEnvConfig`` for the gated env."""
        from raytrade.envs.gym_envs import GATED_ENV_ID

        raw = self.config.get("env_config")
        if not isinstance(raw, Mapping):
            raise ManifestError(f"manifest of {self.name}@{self.version}: field 'config.env_config' missing")
        return env_config_from_dict(raw, gated=self.config.get("env") == GATED_ENV_ID)


def first_error(error: ValidationError) -> str:
    """``field 'a.b': message`` of a validation error's first error (one line)."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(document)"
    return f"field {field!r}: {first['msg']}"


def newer_writer_line(path: Path, exc: ValidationError, code_version: str | None = None) -> str | None:
    """The one-line refusal of a document with a field this checkout's model does not know (written by
    a newer raytrade, ``code_version`` when the file records it), naming the first such field; None
    when ``exc`` has no unknown field (its other errors are reported as they are)."""
    unknown = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
    if not unknown:
        return None
    field = ".".join(str(p) for p in unknown[0]["loc"])
    writer = f"a newer raytrade (code_version {code_version!r})" if code_version else "a newer raytrade"
    return (
        f"{str(path)!r} was written by {writer}: its field {field!r} is unknown to this checkout; "
        "update the checkout (git pull, then reinstall) to read it"
    )


def _written_code_version(text: str | bytes) -> str | None:
    """The top-level ``code_version`` a manifest's text records, if it is JSON and has one."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    version = document.get("code_version") if isinstance(document, dict) else None
    return version if isinstance(version, str) else None


def read_manifest(version_dir: str | Path) -> Manifest:
    """The ``manifest.json`` of a version folder; :class:`ManifestError` (one line naming the file
    and the first bad field) when it is missing or malformed; the writer and its ``code_version``
    when a newer raytrade wrote it (a field this checkout does not know: :func:`newer_writer_line`,
    e.g. a policy service older than the promote step that wrote the version). Like every file of a
    version, it must be a regular file, no symbolic link (``models.regular_file``: a FIFO never
    blocks), of at most :data:`MANIFEST_MAX_BYTES`; anything else is refused unread."""
    path = Path(version_dir) / MANIFEST
    text = read_regular(path, MANIFEST_MAX_BYTES, ManifestError)
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        newer = newer_writer_line(path, exc, _written_code_version(text))
        raise ManifestError(newer or f"{str(path)!r} is not a valid manifest: {first_error(exc)}") from None


def manifest_json(manifest: Manifest) -> str:
    """The JSON text written to ``manifest.json`` (indented, keys in field order)."""
    return manifest.model_dump_json(indent=2)
