"""The method catalogue: one file per method, registered here by name, and built here.

Adding a method: write ``trainables/methods/<name>.py`` (a subclass of ``SSLMethod``
declaring ``name``, ``source``, ``hyperparameters`` and ``forward``), ship its default
search space as ``search_spaces/<name>.yaml``, and add the class to ``METHODS`` below.
The contract, data-parallel and learning tests then cover it, and fail until it passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from trainables.backbones import build_encoder
from trainables.data import ImageDataset
from trainables.distributed import LOCAL, Collective
from trainables.methods.aet import AET
from trainables.methods.base import SSLMethod
from trainables.methods.context_encoder import ContextEncoder
from trainables.methods.cpc import CPC
from trainables.methods.denoising_ae import DenoisingAutoencoder
from trainables.methods.dim import DeepInfoMax
from trainables.methods.jigsaw import Jigsaw
from trainables.methods.moco import MoCo
from trainables.methods.patch_triplet import PatchTriplet
from trainables.methods.relative_patch import RelativePatchLocation
from trainables.methods.rotnet import RotNet
from trainables.methods.simclr import SimCLR
from trainables.methods.spatial_contrasting import SpatialContrasting

#: Contrastive methods first, then the pretext tasks.
METHODS: Mapping[str, type[SSLMethod]] = MappingProxyType({
    cls.name: cls
    for cls in (
        SimCLR, MoCo, CPC, SpatialContrasting, PatchTriplet, DeepInfoMax,
        RotNet, RelativePatchLocation, Jigsaw, DenoisingAutoencoder, ContextEncoder, AET,
    )
})


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r}; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_backbone(method: str, study_backbone: str) -> str:
    """The backbone a trial of ``method`` really uses: its own, if it fixes one."""
    return method_class(method).backbone or study_backbone


def build_method(
    name: str,
    backbone: str,
    dataset: ImageDataset,
    values: Mapping[str, Any],
    comm: Collective = LOCAL,
) -> SSLMethod:
    """The method ``name`` with its encoder for ``dataset``, from the method's resolved
    hyperparameter values; ValueError if they cannot work on the dataset's image size."""
    cls = method_class(name)
    cls.check_image_size(values, dataset.image_size)
    encoder = build_encoder(
        method_backbone(name, backbone), dataset.channels, dataset.mean, dataset.std,
        **cls.encoder_options(values),
    )
    return cls(encoder, encoder.feature_dim, values, comm)
