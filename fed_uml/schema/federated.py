"""The `federated` settings: the Flower apps' rounds, sampling, messages, privacy and resumption.

Most are also run-config keys of the Flower apps (`run_config`); the centralized runner ignores
them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from fed_uml.schema.fields import run_config


@dataclass
class FederatedSettings:
    """Federated runs (Flower apps in clients/ and server/).

    R x L is the training budget: num_rounds rounds of local_epochs local epochs each.
    """

    num_rounds: int = run_config("num-server-rounds", 30)
    """Rounds R of the run."""
    local_epochs: int = run_config("local-epochs", 1)
    """Local epochs L of every institution per round."""
    local_steps: int = run_config("local-steps", 0)
    """> 0: every institution takes exactly this many optimiser steps per round instead of
    local_epochs passes over its own data (small institutions then train as long as large ones)."""
    institutions_per_modality: int | str = run_config("institutions-per-modality", 0)
    """0: spread the federation's nodes round-robin over the modalities; or a map as a string,
    e.g. "sar:3,rgb:1" (its total must equal the number of nodes)."""
    partitioning: str = run_config("partitioning", "iid")
    """How each modality's training data is split among its institutions: iid or dirichlet
    (label skew with concentration dirichlet_alpha). Test data is always split IID, so the
    institutions of a modality together hold its whole test set."""
    dirichlet_alpha: float = run_config("dirichlet-alpha", 0.5)
    """Concentration of the Dirichlet label skew (partitioning=dirichlet; smaller: more skewed)."""
    weighting: str = run_config("weighting", "examples")
    """examples: FedAvg weights by local training examples; modality: every modality weighs the
    same in each round, whatever its institutions' data sizes (against modality domination);
    mixed: (1 - weighting_mix) x the examples weights + weighting_mix x the modality weights."""
    weighting_mix: float = run_config("weighting-mix", 0.5)
    """weighting=mixed only: 0 is examples, 1 is modality, in between an interpolation of the two."""
    fraction_train: float = run_config("fraction-train", 1.0)
    """Fraction of each averaging group's institutions that train in a round (at least one)."""
    fraction_evaluate: float = run_config("fraction-evaluate", 1.0)
    """Fraction of each modality's institutions that evaluate (every evaluate_every rounds);
    1.0: all of them."""
    fraction_calibrate: float = run_config("fraction-calibrate", 1.0)
    """Fraction of each modality's institutions that calibrate at the end; 1.0: all of them
    (every institution then has its deployed model)."""
    min_institutions: int = run_config("min-institutions", 2)
    """Fewest institutions that must answer a round (and be connected at the start)."""
    evaluate_every: int = run_config("evaluate-every", 5)
    """Evaluate on the institutions' local test data every this many rounds (0: only at the end)."""
    round_timeout: float = run_config("round-timeout", 600.0)
    """Seconds an institution has to answer a message (counted from when it was sent)."""
    max_in_flight: int = run_config("max-in-flight", 0)
    """Messages the server keeps in flight at once, topped up as replies arrive; 0: automatic
    (32 in a simulation, where Flower's delivery cost grows with nodes x messages in flight;
    unbounded in a deployment, where every institution trains on its own machine)."""
    describe_upfront: bool = run_config("describe-upfront", False)
    """false: first contact: an institution describes itself when the server first samples
    it, in its first train reply, or in answer to a query.describe sent to the sampled
    institutions just before where the server needs their modality first (the unimodal
    baseline's groups, secure aggregation, DP, evaluation); true: a query.describe to every
    institution before round 1, which makes partial-participation cohorts the same in every
    simulation (and fails the run on a bad node setting before any training)."""
    delivery_index: bool = run_config("delivery-index", True)
    """Simulation only: Flower 1.42.0's in-memory link state walks every stored message for
    every node at every delivery sweep (nodes x messages in flight); true installs an index of
    undelivered messages by node in the simulation's process (server/delivery_index.py; same
    deliveries in the same order; any other Flower version is left alone); false: Flower as
    shipped."""
    transfer_dtype: str = run_config("transfer-dtype", "float32")
    """dtype of backbone tensors on the wire: float32 or float16."""
    secure_aggregation: bool = run_config("secure-aggregation", False)
    """Secure aggregation (docs/privacy.md): the server computes each group's backbone average
    with SecAgg+ (Flower's secaggplus_mod and SecAggPlusWorkflow stages) and only ever holds
    the masked sum. Needs at least 2 institutions per group and round, and at least the
    reconstruction threshold."""
    secure_num_shares: int | float = run_config("secure-num-shares", 1.0)
    """SecAgg+ shares of each institution's secrets: a float is a fraction of the group's
    institutions in the round (1.0: all of them), an int a count (> 2)."""
    secure_reconstruction_threshold: int | float = run_config("secure-reconstruction-threshold", 0.5)
    """Shares needed to unmask (a float: fraction of the shares, at least 2): institutions may
    drop mid-round as long as every survivor keeps this many live neighbours; more is more private."""
    secure_clipping_range: float = run_config("secure-clipping-range", 1.0)
    """Quantisation range c: every element of an institution's pre-scaled backbone update must
    lie in [-c, c] (larger ones are clipped and counted in secure_range_exceeded)."""
    secure_quantization_range: int = run_config("secure-quantization-range", 4194304)
    """Q (2**22): updates are mapped to integers in [0, Q) by stochastic rounding. The secure
    mean differs from the plain one by less than K * 2c / (Q * sum of the weights) per element
    (2c/Q = 4.8e-7 for equal weights)."""
    secure_modulus_range: int = run_config("secure-modulus-range", 4294967296)
    """M (2**32): masks are drawn mod M, a power of 2, at most 2**32; a group holds at most
    M/Q - 1 = 1023 institutions."""
    dp_noise_multiplier: float = run_config("dp-noise-multiplier", 0.0)
    """Institution-level differential privacy: the server adds Gaussian noise of stddev
    dp_noise_multiplier x clipping norm to each group's weighted sum (0: clipping only, no
    privacy claimed); epsilon at dp_delta goes into every round's record. Needs float32 transfer."""
    dp_clipping_norm: float = run_config("dp-clipping-norm", 0.0)
    """Each institution's backbone update is clipped to this L2 norm (0: off)."""
    dp_clipping: str = run_config("dp-clipping", "fixed")
    """fixed, or adaptive (the norm follows the dp_target_quantile of the institutions' update
    norms, learning rate dp_clip_learning_rate)."""
    dp_target_quantile: float = run_config("dp-target-quantile", 0.5)
    """Adaptive clipping: the quantile of the update norms the clipping norm follows."""
    dp_clip_learning_rate: float = run_config("dp-clip-learning-rate", 0.2)
    """Adaptive clipping: the learning rate of the clipping norm."""
    dp_clipped_count_stddev: float = run_config("dp-clipped-count-stddev", 0.0)
    """Adaptive clipping: stddev of the noise on the count of unclipped updates (0: institutions/20)."""
    dp_delta: float = run_config("dp-delta", 1.0e-05)
    """The delta at which epsilon is reported."""
    stop_after_round: int = run_config("stop-after-round", 0)
    """Stop (without calibrating or writing results.json) once this round is checkpointed;
    0: run to the end. For splitting long runs into jobs: continue with resume=true (institutions
    reload their private state of that round, or of the last round before it they trained in,
    from state_dir)."""
    state_dir: str | None = run_config("state-dir", None)
    """Node-local directory where each institution also saves its private state (projection, BN
    statistics) when a run starts and after every round it trains in, so that a stopped run
    can resume; null: kept in memory only (a node that loses it fails instead of restarting
    from the initial projection). In deployment a SuperNode's node config `state-dir` takes
    precedence."""
    audit_log: str | None = run_config("audit-log", None)
    """Path of a JSON-lines log of every message an institution sends (null: no log)."""
