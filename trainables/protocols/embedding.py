"""Two-dimensional maps of the representation.

../shared/seeds/003_c80d734d47a8bbd6.txt (Figure 2, "Visualisation of representations",
citing fast t-SNE) and ../shared/seeds/004_e6ad71d192551e5a.txt ("for plotting vectors
in 2-dim space we used UMAP") judge a representation by eye: do the classes form
clusters? The map is made of held-out images' L2-normalised features (the cosine
geometry every other evaluation uses) with scikit-learn's t-SNE or PCA, or UMAP when
the optional extra ``umap`` (umap-learn) is installed, and saved as a PNG coloured by
label and as a parquet table (x, y, label) that the report redraws. The same map of the
network at its random initialisation is the reference: structure that is there before
training is the architecture's, not the method's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

EmbeddingMethod = Literal["tsne", "umap", "pca"]


@dataclass(frozen=True)
class EmbeddingSettings:
    method: EmbeddingMethod = "tsne"
    #: Held-out images mapped (at most; a seeded choice when there are more).
    points: int = 2000


def embed(features: Tensor, method: EmbeddingMethod, seed: int) -> np.ndarray:
    """(n, 2) coordinates of the L2-normalised ``features``, computed with as many
    threads as torch may use: scikit-learn's t-SNE otherwise starts an OpenMP thread per
    core beside torch's, and on a shared 2-core machine that made it twenty times
    slower (measured: 128 points, 1.0 s with one thread, 24 s without the limit)."""
    from threadpoolctl import threadpool_limits

    x = features.detach().float().cpu()
    x = (x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)).numpy()
    with threadpool_limits(limits=torch.get_num_threads()):
        return _embed(x, method, seed)


def _embed(x: np.ndarray, method: EmbeddingMethod, seed: int) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(x) - 1) / 3)
    return TSNE(n_components=2, init="pca", perplexity=perplexity,
                random_state=seed).fit_transform(x)


def map_files(coordinates: np.ndarray, labels: Tensor, title: str) -> tuple[bytes, bytes]:
    """(PNG, parquet) of one map: a scatter coloured by label, and its table."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = labels.cpu().numpy()
    table = pd.DataFrame({"x": coordinates[:, 0], "y": coordinates[:, 1], "label": classes})
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)

    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    scatter = axes.scatter(table["x"], table["y"], c=classes, cmap="tab10" if
                           classes.max() < 10 else "tab20", s=6, alpha=0.8)
    axes.legend(*scatter.legend_elements(), title="label", fontsize=7, loc="best",
                markerscale=0.8)
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return png.getvalue(), parquet.getvalue()
