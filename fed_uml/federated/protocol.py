"""The messages between the ServerApp and an institution's ClientApp, written down once.

Every message type, record name and key the two apps exchange is named here, and the payload
of each message is a small typed record that converts to and from its wire form (a Flower
ConfigRecord or MetricRecord). The apps never import each other: they meet in this module.
It imports no data reader (the server imports it).

    server -> institution                          institution -> server
    query.describe   DescribeInstruction           Description       (ConfigRecord "description")
    train            TrainInstruction + backbone   TrainReport       (MetricRecord "metrics") + backbone
                                                   (+ Description on a first contact, see below)
    evaluate         EvaluateInstruction + backbone EvaluateReport   (MetricRecord "metrics")
    query.calibrate  CalibrateInstruction + backbone CalibrateReport (MetricRecord "metrics")

Instructions travel as the ConfigRecord "config", the backbone as the ArrayRecord "arrays".
The server sends what the institution uses and nothing else: the training schedule
(round, number of rounds, local epochs or steps) comes in the train instruction, the
calibration epochs in the calibrate instruction. An institution says once, in its
description, which modality it holds and what it is called; after that the server knows it
by its node id, so reports carry only scalars about the work.

The description comes either in reply to `query.describe` or, where the server needs
nothing from it before the first round (federated UML, every institution trains in every
round, no secure aggregation or DP), with the reply to the first train message: that
message carries `resumed-after-round`, and the institution starts its private state as
`query.describe` would have. This saves one message to every institution at start-up.

A record reads as its wire form too (`report["num-examples"]`), so that code which works
with the plain mapping keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from flwr.app import ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

# -- message types ---------------------------------------------------------------------------
DESCRIBE_ACTION = "describe"  # the ClientApp's @app.query names
CALIBRATE_ACTION = "calibrate"
DESCRIBE = f"{MessageType.QUERY}.{DESCRIBE_ACTION}"
TRAIN = MessageType.TRAIN
EVALUATE = MessageType.EVALUATE
CALIBRATE = f"{MessageType.QUERY}.{CALIBRATE_ACTION}"

# -- record names in a message's RecordDict -----------------------------------------------------
CONFIG = "config"  # server -> institution: the instruction
ARRAYS = "arrays"  # the backbone, both ways
METRICS = "metrics"  # institution -> server: a report of scalars
DESCRIPTION = "description"  # institution -> server: who it is

# -- config keys (instructions) -------------------------------------------------------------
SERVER_ROUND = "server-round"
NUM_ROUNDS = "num-rounds"
LOCAL_EPOCHS = "local-epochs"
LOCAL_STEPS = "local-steps"
TRANSFER_DTYPE = "transfer-dtype"
CALIBRATION_EPOCHS = "calibration-epochs"
RESULTS_DIR = "results-dir"
RESUMED_AFTER_ROUND = "resumed-after-round"

# -- keys of the description and of the reports ------------------------------------------------
MODALITY = "modality"
INSTITUTION = "institution"
NUM_EXAMPLES = "num-examples"  # the examples a report is about (training or test)
N_TRAIN = "n-train"
N_TEST = "n-test"
NUM_CLASSES = "num-classes"
IN_CHANNELS = "in-channels"
TRAIN_LOSS = "train-loss"
TRAIN_ACCURACY = "train-accuracy"
OPTIMIZER_STEPS = "optimizer-steps"
ACCURACY = "accuracy"
ACCURACY_BEFORE_CALIBRATION = "accuracy-before-calibration"
ACCURACY_AFTER_CALIBRATION = "accuracy-after-calibration"
MODEL_SAVED = "model-saved"
MODEL_FILE = "model-file"  # record of the calibrate reply: the model file an institution wrote
MODEL_PATH = "path"
MODEL_SHA256 = "sha256"
MODEL_BYTES = "bytes"
# The multi-label metrics (dataset.task=multi_label, fed_uml.results.TASK_METRICS) in the
# evaluate and calibrate reports, where single-label runs send the accuracy; the calibrate
# report sends each with one of the suffixes.
MAP_MACRO = "map-macro"
MAP_MICRO = "map-micro"
F1_MACRO = "f1-macro"
SCORE_KEYS = {"map_macro": MAP_MACRO, "map_micro": MAP_MICRO, "f1_macro": F1_MACRO}  # metric -> wire key
BEFORE_CALIBRATION = "-before-calibration"
AFTER_CALIBRATION = "-after-calibration"
# Set by the server on a train reply before averaging (never sent by an institution).
AGGREGATION_WEIGHT = "aggregation-weight"

# -- privacy: only in runs with secure aggregation or differential privacy (docs/privacy.md) --
# Extra records of a train message; a plain run's messages carry neither.
CLIPPING = "clipping"  # ConfigRecord: clip the backbone update (ClipInstruction)
SECURE = "secure-aggregation"  # ConfigRecord: this institution's SecAgg+ input (SecureInstruction)
CLIPPING_NORM = "clipping-norm"
ADAPTIVE_CLIPPING = "adaptive-clipping"
SECURE_WEIGHT = "secure-weight"
SECURE_CLIPPING_RANGE = "secure-clipping-range"
# In a train report: whether the update was within the clipping norm (1/0; under secure
# aggregation it travels inside the masked sum instead), and under secure aggregation how many
# elements of the pre-scaled update lay outside [-c, c] (quantisation clipped them).
DP_UNCLIPPED = "dp-unclipped"
SECURE_RANGE_EXCEEDED = "secure-range-exceeded"


def _key(name: str, decode: Callable[[Any], Any], encode: Callable[[Any], Any] | None = None,
         optional: bool = False, default_none: bool = False) -> Any:
    """A record field and its wire key.

    `decode` types a wire value, `encode` makes one. `optional`: the value may be None (a metric the
    run's task does not have), which the wire form leaves out and a missing key reads as;
    `default_none`: it is None unless given.
    """
    meta = {"key": name, "decode": decode, "encode": encode, "optional": optional or default_none}
    return field(default=None, metadata=meta) if default_none else field(metadata=meta)


def _scores(suffix: str = "") -> Any:
    """A {metric: value} field of multi-label metrics, each on the wire as SCORE_KEYS[metric] + suffix."""
    return field(default_factory=dict, metadata={"scores": suffix})


class _Record(Mapping[str, Any]):
    """Base of the typed records: a frozen dataclass whose wire form is {key: value}."""

    record_name: ClassVar[str]
    record_type: ClassVar[type]
    __dataclass_fields__: ClassVar[dict[str, Any]]  # every record is a dataclass (for `fields`)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if "scores" in f.metadata:
                out.update({SCORE_KEYS[name] + f.metadata["scores"]: float(v) for name, v in value.items()})
                continue
            if value is None and f.metadata["optional"]:
                continue
            encode = f.metadata["encode"]
            out[f.metadata["key"]] = encode(value) if encode else value
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """The record from its wire form; a missing key names the message and the key."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if "scores" in f.metadata:
                suffix = f.metadata["scores"]
                values[f.name] = {name: float(record[k + suffix]) for name, k in SCORE_KEYS.items()
                                  if k + suffix in record}
                continue
            key = f.metadata["key"]
            if key not in record and f.metadata["optional"]:
                values[f.name] = None
                continue
            if key not in record:
                raise ValueError(f"{cls.__name__}: the message has no {key!r} (it has {sorted(record)})")
            values[f.name] = f.metadata["decode"](record[key])
        return cls(**values)

    @classmethod
    def from_content(cls, content: RecordDict) -> Self:
        if cls.record_name not in content:
            raise ValueError(f"{cls.__name__}: the message has no record {cls.record_name!r} "
                             f"(it has {sorted(content.keys())})")
        return cls.from_record(content[cls.record_name])

    def content(self, arrays: ArrayRecord | None = None) -> RecordDict:
        """A message content: this record (and the backbone, if given)."""
        content = RecordDict({self.record_name: self.record_type(self.to_dict())})
        if arrays is not None:
            content[ARRAYS] = arrays
        return content

    def add_to(self, content: RecordDict) -> RecordDict:
        """`content` with this record added (an extra record of a message)."""
        content[self.record_name] = self.record_type(self.to_dict())
        return content

    # read as the wire mapping
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


class _Instruction(_Record):
    record_name = CONFIG
    record_type = ConfigRecord


class _Report(_Record):
    record_name = METRICS
    record_type = MetricRecord


# -- server -> institution ----------------------------------------------------------------------
@dataclass(frozen=True)
class DescribeInstruction(_Instruction):
    """Describe yourself (`query.describe`), saying whether the run is new or resumes."""

    # 0: a new run (the institution starts from its initial private state); k: the run resumes
    # after round k (the institution restores its private state of round k, or the newest
    # before it, from its node-local state-dir).
    resumed_after_round: int = _key(RESUMED_AFTER_ROUND, int)


@dataclass(frozen=True)
class TrainInstruction(_Instruction):
    """Train the sent backbone for the round's local epochs or steps."""

    server_round: int = _key(SERVER_ROUND, int)
    num_rounds: int = _key(NUM_ROUNDS, int)  # the schedule's length (learning-rate schedule)
    local_epochs: int = _key(LOCAL_EPOCHS, int)
    local_steps: int = _key(LOCAL_STEPS, int)  # > 0: this many steps instead of local_epochs passes
    transfer_dtype: str = _key(TRANSFER_DTYPE, str)  # of the backbone in the reply
    # Only on a first contact (no `query.describe` before it): 0 for a new run, k when the run
    # resumes after round k, as in DescribeInstruction; the reply then carries the Description.
    first_contact_after_round: int | None = _key(RESUMED_AFTER_ROUND, int, default_none=True)


@dataclass(frozen=True)
class EvaluateInstruction(_Instruction):
    """Evaluate the sent backbone on the local test data."""

    server_round: int = _key(SERVER_ROUND, int)  # the round whose backbone is sent


@dataclass(frozen=True)
class CalibrateInstruction(_Instruction):
    """Run Algorithm 1 with the final backbone and write the model."""

    server_round: int = _key(SERVER_ROUND, int)  # the last round
    calibration_epochs: int = _key(CALIBRATION_EPOCHS, int)
    # where an institution without a node-local state-dir or model-dir writes its model
    results_dir: str = _key(RESULTS_DIR, str)


@dataclass(frozen=True)
class ClipInstruction(_Instruction):
    """Differential privacy: clip the backbone update to L2 norm `clipping_norm` before it leaves.

    The update is returned minus received, all tensors together; with `adaptive`, say whether it was
    within it (`DP_UNCLIPPED`).
    """

    record_name = CLIPPING
    clipping_norm: float = _key(CLIPPING_NORM, float)
    adaptive: bool = _key(ADAPTIVE_CLIPPING, lambda v: bool(int(v)), int)


@dataclass(frozen=True)
class SecureInstruction(_Instruction):
    """Secure aggregation: send the update pre-scaled by `weight` into the SecAgg+ masked sum.

    `weight` is this institution's aggregation weight over the group's largest, in (0, 1];
    `clipping_range` is the quantisation range c its elements must lie in.
    """

    record_name = SECURE
    weight: float = _key(SECURE_WEIGHT, float)
    clipping_range: float = _key(SECURE_CLIPPING_RANGE, float)


# -- institution -> server ----------------------------------------------------------------------
@dataclass(frozen=True)
class Description(_Record):
    """What an institution says of itself: modality, name, data sizes, classes and channels."""

    record_name = DESCRIPTION
    record_type = ConfigRecord

    modality: str = _key(MODALITY, str)
    institution: str = _key(INSTITUTION, str)  # its name (fed_uml.federated.roles.InstitutionId.name)
    n_train: int = _key(N_TRAIN, int)
    n_test: int = _key(N_TEST, int)
    num_classes: int = _key(NUM_CLASSES, int)
    in_channels: int = _key(IN_CHANNELS, int)


@dataclass(frozen=True)
class TrainReport(_Report):
    """The outcome of local training: examples (the FedAvg weight), steps, loss and accuracy."""

    num_examples: int = _key(NUM_EXAMPLES, int)  # local training examples: the FedAvg weight
    optimizer_steps: int = _key(OPTIMIZER_STEPS, int)
    train_loss: float = _key(TRAIN_LOSS, float)
    train_accuracy: float | None = _key(TRAIN_ACCURACY, float, optional=True)  # None: multi-label


@dataclass(frozen=True)
class EvaluateReport(_Report):
    """The outcome of an evaluation: examples and accuracy (or the multi-label scores)."""

    num_examples: int = _key(NUM_EXAMPLES, int)  # local test examples
    accuracy: float | None = _key(ACCURACY, float, optional=True)  # single-label; None for multi-label
    scores: Mapping[str, float] = _scores()  # multi-label: map_macro, map_micro, f1_macro


@dataclass(frozen=True)
class CalibrateReport(_Report):
    """The outcome of Algorithm 1: test metrics before and after, and whether the model was written."""

    num_examples: int = _key(NUM_EXAMPLES, int)  # local test examples
    n_train: int = _key(N_TRAIN, int)
    # single-label; None for multi-label, which sends `scores_before` and `scores_after` instead
    accuracy_before_calibration: float | None = _key(ACCURACY_BEFORE_CALIBRATION, float, optional=True)
    accuracy_after_calibration: float | None = _key(ACCURACY_AFTER_CALIBRATION, float, optional=True)
    # whether it wrote its model to its own disk (the model itself never leaves it); 1 or 0 on the wire
    model_saved: bool = _key(MODEL_SAVED, lambda v: bool(int(v)), int)
    scores_before: Mapping[str, float] = _scores(BEFORE_CALIBRATION)
    scores_after: Mapping[str, float] = _scores(AFTER_CALIBRATION)


@dataclass(frozen=True)
class ModelFile(_Record):
    """The model file an institution wrote on its own disk (the model itself never travels).

    Its SHA-256, so that results.json records which file the run made (`files`) and a later
    `predict` can tell it from a file of another run. `path` is relative to the results-dir the
    server suggested, or "" where the institution wrote elsewhere (its state-dir).
    """

    record_name = MODEL_FILE
    record_type = ConfigRecord

    path: str = _key(MODEL_PATH, str)
    sha256: str = _key(MODEL_SHA256, str)
    bytes: int = _key(MODEL_BYTES, int)
