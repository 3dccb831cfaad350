"""The one generic pretraining loop: it knows no method, no Ray and no MLflow.

Per step it draws a batch of indices, asks the method for the step's inputs
(``make_views``: batched augmentation, patches or pretext transforms, on the training
device, without gradient) and for a loss, and takes an optimiser step. Per evaluation it
scores the method's frozen representation with kNN (and the linear and MLP probes when
asked; after the last epoch also the method's own extra metrics and artifacts, and the
evaluation protocols of ``settings.protocols``) and hands the results, with a way to
build a checkpoint, to a ``Reporter``.

The loop keeps no global state. With a method whose ``comm`` spans several workers, each
rank draws the same permutation from the seed and takes its own equal share of every
global batch, the method is wrapped in DistributedDataParallel (gradients averaged over
workers), and only rank 0 evaluates; only rank 0's reports should be logged or
checkpointed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from tracking import schema
from trainables.augment import AugmentationPolicy
from trainables.data import ImageDataset
from trainables.distributed import Collective
from trainables.evaluation import (
    extract_features,
    knn_accuracy,
    linear_probe_accuracy,
    mlp_probe_accuracy,
)
from trainables.hyperparameters import TrainingHyperparameters
from trainables.methods.base import SSLMethod
from trainables.optim import LARS, lars_groups
from trainables.protocols import ProtocolSettings, evaluate_protocols

#: The batch size at which ``lr`` is the learning rate when it is scaled with the batch.
REFERENCE_BATCH_SIZE = 256


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the trial cannot recover and must fail."""


Precision = Literal["auto", "fp32", "bf16", "fp16"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    eval_every: int = 1
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw"
    warmup_epochs: int = 0
    device: str = "cpu"
    seed: int = 0
    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_probe: Literal["final", "every", "never"] = "final"
    #: When the non-linear (MLP) probe runs, like ``linear_probe``.
    mlp_probe: Literal["final", "every", "never"] = "final"
    #: Evaluate the pooled output of this encoder stage (1-based); None: the last.
    eval_layer: int | None = None
    #: Normalise BatchNorm over the global batch (data-parallel GPU trials only).
    sync_bn: bool = False
    #: When the test-split metrics are computed: at the ``final`` evaluation, or at
    #: ``every`` one (validation metrics are computed at every evaluation).
    test_metrics: Literal["final", "every"] = "final"
    #: How the peak learning rate follows the batch size (see ``scaled_lr``).
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    #: What one unit of the budget is (see ``steps_per_epoch``).
    budget_unit: Literal["epochs", "steps"] = "epochs"
    #: The evaluation protocols (fine-tuning, pruning, retrieval, embedding maps) this
    #: run computes; None: none.
    protocols: ProtocolSettings | None = None
    #: Autocast dtype of the forward pass and loss: fp32 (no autocast), bf16, or fp16 with
    #: gradient scaling; ``auto`` is bf16 on a CUDA device with native bf16 (compute
    #: capability 8.0 or newer), else fp32. Evaluation extracts features in it too.
    precision: Precision = "fp32"
    #: Channels-last memory format for the model and the image views; ``auto`` turns it on
    #: where it pays: on CUDA with a 16-bit precision (tensor-core convolutions are NHWC).
    channels_last: bool | Literal["auto"] = False
    #: ``torch.compile`` the encoder's forward (never automatic: compiling costs tens of
    #: seconds per trial, which short or early-stopped trials do not win back).
    compile: bool = False


@dataclass
class EpochResult:
    """What the loop hands to its reporter after every epoch."""

    epoch: int
    metrics: dict[str, float]
    evaluated: bool
    final: bool
    #: Builds the full training state for a checkpoint; only called when one is saved.
    state: Callable[[], dict[str, Any]] = field(repr=False)
    #: Files (relative path to content) the method produced after its last epoch.
    artifacts: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: After the last epoch (rank 0): the evaluated module, images in [0, 1] to the
    #: features that were scored (the method's ``representation`` at ``eval_layer``),
    #: for the recording layer to log as the trial's model.
    encoder: torch.nn.Module | None = field(default=None, repr=False)


class Reporter(Protocol):
    def __call__(self, result: EpochResult) -> None: ...


def scaled_lr(training: TrainingHyperparameters, settings: LoopSettings) -> float:
    """The peak learning rate after batch-size scaling: ``lr`` as given (``none``),
    times batch/256 (``linear``, Goyal et al.) or times sqrt(batch/256) (``sqrt``,
    SimCLR's rule for large batches), so that a batch-size sweep need not confound the
    batch with the step size per sample."""
    ratio = training.batch_size / REFERENCE_BATCH_SIZE
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[settings.lr_scaling]
    return training.lr * factor


def steps_per_epoch(n: int, batch_size: int, settings: LoopSettings) -> int:
    """Optimisation steps in one unit of budget: a full pass over the pretraining images
    (``epochs``), or as many steps as a pass at the reference batch size of 256 takes
    (``steps``: every batch size then gets the same number of updates)."""
    if settings.budget_unit == "steps":
        return max(1, n // REFERENCE_BATCH_SIZE)
    return n // batch_size


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The concrete precision for ``device`` (see ``LoopSettings.precision``)."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0):
        return "bf16"
    return "fp32"


def resolve_channels_last(
    channels_last: bool | Literal["auto"], device: torch.device, precision: Precision
) -> bool:
    """The concrete memory-format choice (see ``LoopSettings.channels_last``), given the
    resolved precision."""
    if channels_last == "auto":
        return device.type == "cuda" and precision in _AUTOCAST_DTYPES
    return bool(channels_last)


def _autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    """Autocast to the precision's dtype; a disabled context for fp32."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _channels_last(views: list[Tensor]) -> list[Tensor]:
    """Image views (4-d float tensors) in channels-last layout; targets and patch grids
    as they are."""
    return [
        v.contiguous(memory_format=torch.channels_last)
        if v.ndim == 4 and v.is_floating_point() else v
        for v in views
    ]


def _optimizer(
    method: SSLMethod,
    training: TrainingHyperparameters,
    settings: LoopSettings,
    device: torch.device,
) -> torch.optim.Optimizer:
    """The configured optimiser; on CUDA its fused kernel (one launch for all parameters,
    and fp16's gradient scaler then checks for infs without waiting for the GPU). On the
    CPU the default implementation, so CPU results stay as they were. LARS, as SimCLR
    uses it, leaves biases and normalisation parameters out of its decay and trust ratio;
    it is not fused but multi-tensor (``benchmarks.optimizer`` measures its cost against
    fused SGD), and under fp16 the scaler reads its inf check back to the host every
    step."""
    lr = scaled_lr(training, settings)
    if settings.optimizer == "lars":
        return LARS(lars_groups(method, training.weight_decay), lr=lr, momentum=0.9)
    params = [p for p in method.parameters() if p.requires_grad]
    fused = True if device.type == "cuda" else None
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=training.weight_decay,
                               fused=fused)
    return torch.optim.AdamW(params, lr=lr, weight_decay=training.weight_decay, fused=fused)


def _schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero at the end of the full budget."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _scores(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    num_classes: int,
    settings: LoopSettings,
    probes: tuple[bool, bool],
    prefix: str,
) -> dict[str, float]:
    """kNN, and the linear and MLP probes when due, of ``queries`` against ``bank``."""
    with_linear, with_mlp = probes
    metrics = {prefix + schema.KNN_ACC: knn_accuracy(
        bank, bank_labels, queries, query_labels, num_classes,
        k=settings.knn_k, temperature=settings.knn_temperature,
    )}
    if with_linear:
        metrics[prefix + schema.LINEAR_ACC] = linear_probe_accuracy(
            bank, bank_labels, queries, query_labels, num_classes)
    if with_mlp:
        metrics[prefix + schema.MLP_ACC] = mlp_probe_accuracy(
            bank, bank_labels, queries, query_labels, num_classes)
    return metrics


def evaluate(
    method: SSLMethod, dataset: ImageDataset, settings: LoopSettings, final: bool = True
) -> dict[str, float]:
    """Score the frozen representation.

    On the validation part of the labelled train split (``val_*`` metrics, every
    evaluation, when the dataset has one): the bank and the probes' training set are the
    rest of the train split. This is what a search selects on. On the test split
    (unprefixed metrics, at the ``final`` evaluation, or at every one with
    ``test_metrics: every``): the bank is the whole train split. Hyperparameters are
    never selected on it.
    """
    device = torch.device(settings.device)
    representation = method.representation(settings.eval_layer)
    probes = (_probe_due(settings.linear_probe, final), _probe_due(settings.mlp_probe, final))
    autocast = _autocast(device, resolve_precision(settings.precision, device))
    with autocast:
        train_features = extract_features(representation, dataset.train_images, device)
    labels = dataset.train_labels
    metrics: dict[str, float] = {}
    if dataset.has_validation:
        val = dataset.validation
        on_features, on_labels = val.to(train_features.device), val.to(labels.device)
        metrics.update(_scores(
            train_features[~on_features], labels[~on_labels], train_features[on_features],
            labels[on_labels], dataset.num_classes, settings, probes, schema.VAL_PREFIX,
        ))
    if final or settings.test_metrics == "every":
        with autocast:
            test_features = extract_features(representation, dataset.test_images, device)
        metrics.update(_scores(train_features, labels, test_features, dataset.test_labels,
                               dataset.num_classes, settings, probes, ""))
    return metrics


def _probe_due(when: str, final: bool) -> bool:
    return when == "every" or (when == "final" and final)


def _batches(
    n: int,
    batch_size: int,
    steps: int,
    generator: torch.Generator,
    comm: Collective,
    device: torch.device | None = None,
):
    """Index slices of ``steps`` full batches: consecutive seeded permutations of the
    images (one pass when ``steps`` is a pass's worth), each rank taking its contiguous,
    equal share of every global batch. The permutations are drawn on the CPU (the same
    order on every device) and moved to ``device`` once per epoch, not once per step: a
    copy to a GPU waits for it."""
    order = torch.randperm(n, generator=generator)
    while len(order) < steps * batch_size:
        order = torch.cat([order, torch.randperm(n, generator=generator)])
    order = order.to(device)
    per_rank = batch_size // comm.world_size
    for start in range(0, steps * batch_size, batch_size):
        offset = start + comm.rank * per_rank
        yield order[offset : offset + per_rank]


def _use_sync_bn(method: SSLMethod) -> None:
    """Make the method's BatchNorm layers SyncBatchNorm in place, so that statistics
    cover the global batch (SimCLR's global BN)."""
    for name, child in list(method.named_children()):
        setattr(method, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))


def _wrap(method: SSLMethod, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel when the method spans several workers: it averages
    parameter gradients, which with the gathering losses gives the global gradient."""
    if not method.comm.distributed:
        return method
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        method, device_ids=device_ids, find_unused_parameters=not method.uses_all_parameters
    )


def _on_device(dataset: ImageDataset, pretrain_images: Tensor, device: torch.device
               ) -> ImageDataset:
    """The dataset with its evaluation splits on ``device``, copied once per trial rather
    than at every evaluation (on the CPU nothing is copied); where the labelled train split
    is the pretraining set, the copy already there serves both."""
    train_images = (pretrain_images if dataset.train_images is dataset.pretrain_images
                    else dataset.train_images.to(device))
    return replace(
        dataset,
        pretrain_images=pretrain_images,
        train_images=train_images,
        train_labels=dataset.train_labels.to(device),
        test_images=dataset.test_images.to(device),
        test_labels=dataset.test_labels.to(device),
    )


def _check_finite(losses: Tensor, epoch: int) -> None:
    """Raise if any step's loss of the epoch was NaN or infinite, naming the first. Checked
    once per epoch, not per step: a per-step check makes the host wait for the GPU at every
    step. Parameters that went non-finite are never checkpointed (the check comes before
    the epoch is reported)."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    step = int((~finite).nonzero()[0, 0])
    raise NonFiniteLossError(
        f"loss became {losses[step].item()} at epoch {epoch}, step {step + 1}"
    )


def _global_rng(device: torch.device) -> dict[str, Tensor]:
    """Torch's global random state (the CPU's, and the device's on a GPU): what methods
    draw from inside their step (MoCo's key shuffle, Deep InfoMax's prior samples, the
    layer-wise triplet's negatives), saved so that a resumed trial draws on as the
    uninterrupted one would."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_global_rng(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _random_states(view_generator: torch.Generator, device: torch.device
                   ) -> dict[str, Tensor]:
    """This process's random states, flat: the view generator's and the global ones."""
    return {"view_generator": view_generator.get_state(),
            **{f"global_{k}": v for k, v in _global_rng(device).items()}}


def _every_rank(states: dict[str, Tensor], comm: Collective, device: torch.device
                ) -> list[dict[str, Tensor]]:
    """Every rank's ``states`` (the same keys and sizes on every rank), gathered so that
    the checkpoint, which rank 0 alone writes, holds them all: each rank seeds its views
    differently, and one that resumed from rank 0's state would repeat rank 0's draws."""
    names = list(states)
    sizes = [states[name].numel() for name in names]
    # Sent from the training device: NCCL gathers GPU tensors only.
    flat = torch.cat([states[name].flatten() for name in names]).to(device)
    ranks = comm.gather_no_grad(flat).cpu().chunk(comm.world_size)
    # Each state its own tensor: a generator reads a view's storage from its start, and
    # a saved view would carry the whole gathered storage.
    return [dict(zip(names, (t.clone() for t in part.split(sizes)), strict=True))
            for part in ranks]


def _restore_random_states(resume_state: Mapping[str, Any], comm: Collective,
                           view_generator: torch.Generator, device: torch.device) -> None:
    """This rank's own random states from the checkpoint. Checkpoints of one process, of
    another number of workers, or of versions that saved rank 0's alone give every rank
    rank 0's (close, not exact); those of still earlier versions lack the global state."""
    saved = resume_state.get("rank_random_states")
    if saved is not None and len(saved) == comm.world_size:
        own = saved[comm.rank]
        view_generator.set_state(own["view_generator"])
        _set_global_rng({k.removeprefix("global_"): v for k, v in own.items()
                         if k.startswith("global_")}, device)
        return
    view_generator.set_state(resume_state["view_generator"])
    if "global_rng" in resume_state:
        _set_global_rng(resume_state["global_rng"], device)


def train(
    method: SSLMethod,
    dataset: ImageDataset,
    training: TrainingHyperparameters,
    settings: LoopSettings,
    report: Reporter,
    resume_state: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Pretrain ``method`` for ``settings.epochs`` epochs and return the last metrics.

    Per step the host only queues work: batch indices, views, loss, backward and optimiser
    step stay on the training device, and the host waits for the device once per epoch
    (the finiteness check and the epoch's loss), so a GPU is never idle between steps.
    """
    comm = method.comm
    if training.batch_size > len(dataset):
        raise ValueError(
            f"batch_size {training.batch_size} exceeds the {len(dataset)} pretraining images"
        )
    if training.batch_size % comm.world_size:
        raise ValueError(
            f"batch_size {training.batch_size} is not divisible by the {comm.world_size} workers"
        )
    device = torch.device(settings.device)
    precision = resolve_precision(settings.precision, device)
    channels_last = resolve_channels_last(settings.channels_last, device, precision)
    settings = replace(settings, precision=precision, channels_last=channels_last)
    if settings.sync_bn and comm.distributed:
        _use_sync_bn(method)
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if settings.compile:
        # In place: the state dict keeps its keys, so checkpoints do not depend on it.
        method.encoder.compile()
    model = _wrap(method, device)
    policy = AugmentationPolicy.from_strength(training.aug_strength, training.crop_scale)
    optimizer = _optimizer(method, training, settings, device)
    # fp16 gradients can underflow: the loss is scaled up before backward and the
    # gradients unscaled before the step (a no-op for fp32 and bf16).
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    epoch_steps = steps_per_epoch(len(dataset), training.batch_size, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(settings.epochs * epoch_steps, settings.warmup_epochs * epoch_steps)
    )
    view_generator = torch.Generator(device=device).manual_seed(settings.seed + comm.rank)
    start_epoch = 1
    if resume_state is not None:
        method.load_state_dict(resume_state["method"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        _restore_random_states(resume_state, comm, view_generator, device)
        if resume_state.get("grad_scaler"):
            scaler.load_state_dict(resume_state["grad_scaler"])
        start_epoch = int(resume_state["epoch"]) + 1

    def state(epoch: int, metrics: dict[str, float],
              every_rank: list[dict[str, Tensor]] | None = None
              ) -> Callable[[], dict[str, Any]]:
        return lambda: {
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "view_generator": view_generator.get_state(),
            "global_rng": _global_rng(device),
            "rank_random_states": None if every_rank is None else [
                _random_states(view_generator, device), *every_rank[1:]],
            "grad_scaler": scaler.state_dict(),
            "epoch": epoch,
            "metrics": dict(metrics),
        }

    if resume_state is not None and start_epoch > settings.epochs:
        # Resumed from the checkpoint of the last epoch (the driver died before it learnt
        # that the run had finished): report that epoch's result again, train nothing.
        metrics = dict(resume_state["metrics"])
        report(EpochResult(settings.epochs, metrics, True, True, state(settings.epochs, metrics)))
        return metrics

    # The uint8 images move to the training device once; batches are then index lookups
    # on the device and augmentation never waits for a host-to-device copy.
    images = dataset.pretrain_images.to(device)
    evaluation_data = _on_device(dataset, images, device) if comm.rank == 0 else dataset
    autocast = _autocast(device, precision)
    step_losses = torch.empty(epoch_steps, device=device)
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, settings.epochs + 1):
        method.begin_epoch(epoch, settings.epochs)
        method.train()
        order_generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        steps = seen = 0
        started = time.perf_counter()
        for idx in _batches(len(images), training.batch_size, epoch_steps, order_generator,
                            comm, device):
            batch = images[idx]
            with torch.no_grad():
                views = method.make_views(batch, policy, view_generator)
            if channels_last:
                views = _channels_last(views)
            with autocast:
                loss: Tensor = model(views)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step_losses[steps] = loss.detach()
            steps += 1
            seen += batch.shape[0]
        _check_finite(step_losses[:steps], epoch)
        loss_mean = float(comm.mean(step_losses[:steps].sum())) / max(steps, 1)
        elapsed = time.perf_counter() - started
        metrics = {
            schema.EPOCH: float(epoch),
            schema.LOSS: loss_mean,
            schema.IMAGES_PER_SEC: seen * comm.world_size / max(elapsed, 1e-9),
            schema.LR: scheduler.get_last_lr()[0],
        }
        final = epoch == settings.epochs
        evaluated = final or epoch % settings.eval_every == 0
        # Checkpoints are taken at evaluations. Gathered here, before rank 0 evaluates
        # (the others would wait for it under the process group's timeout), and not after
        # the last epoch, whose checkpoint resumes nothing; rank 0's own entry is taken
        # again when the checkpoint is written, after its evaluation.
        every_rank = (_every_rank(_random_states(view_generator, device), comm, device)
                      if evaluated and not final and comm.distributed else None)
        artifacts: dict[str, bytes] = {}
        encoder = None
        if evaluated and comm.rank == 0:
            metrics.update(evaluate(method, evaluation_data, settings, final))
            if final:
                metrics.update(method.extra_evaluation(dataset, device))
                artifacts = method.artifacts()
                encoder = method.representation(settings.eval_layer)
            if settings.protocols is not None:
                scores, files = evaluate_protocols(
                    method, dataset, settings.protocols, eval_layer=settings.eval_layer,
                    device=device, seed=settings.seed, final=final,
                )
                metrics.update(scores)
                artifacts = {**artifacts, **files}
        report(EpochResult(epoch, metrics, evaluated, final,
                           state(epoch, metrics, every_rank), artifacts, encoder))
    return metrics
