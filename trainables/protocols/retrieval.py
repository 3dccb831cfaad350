"""Similarity search over the representation.

../shared/seeds/004_e6ad71d192551e5a.txt uses the learned representations for
similarity search (with scikit-learn and FAISS) and shows a few queries with their
nearest images. Here the queries are held-out images, the database the labelled train
split, the similarity the cosine of the evaluated features, and a neighbour is relevant
when it has the query's class:

- precision at k: the share of relevant images among a query's k nearest, averaged;
- mean average precision at K: for each query the mean of the precision at each rank
  i <= K that holds a relevant image (0 when none does), averaged over queries.

The search is exact either way: FAISS's flat inner-product index when FAISS is installed
(the optional extra ``faiss``), else a chunked matrix product and top-k in torch; both
return the same neighbours (tested), FAISS is faster on large databases.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tracking import schema

Backend = Literal["auto", "faiss", "torch"]
#: Green for a neighbour of the query's class, red for another, around each image.
_RIGHT, _WRONG = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1)


@dataclass(frozen=True)
class RetrievalSettings:
    ks: tuple[int, ...] = (1, 10)
    backend: Backend = "auto"
    #: Queries shown in the examples image, each with its ``min(5, max(ks))`` nearest.
    examples: int = 6


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def nearest(database: Tensor, queries: Tensor, k: int, backend: Backend = "auto",
            chunk_size: int = 1024) -> Tensor:
    """Indices (queries x k) of each query's k most cosine-similar database rows, most
    similar first."""
    if k > database.shape[0]:
        raise ValueError(f"k={k} exceeds the {database.shape[0]} database images")
    database, queries = F.normalize(database.float(), dim=1), F.normalize(queries.float(), dim=1)
    if backend == "faiss" or (backend == "auto" and faiss_available()):
        return _faiss_nearest(database, queries, k).to(queries.device)
    return torch.cat([(queries[i : i + chunk_size] @ database.T).topk(k, dim=1).indices
                      for i in range(0, queries.shape[0], chunk_size)])


def _faiss_nearest(database: Tensor, queries: Tensor, k: int) -> Tensor:
    import faiss

    # FAISS's OpenMP threads would otherwise take every core of a shared machine.
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database.cpu().contiguous().numpy())
    _, found = index.search(queries.cpu().contiguous().numpy(), k)
    return torch.from_numpy(found).long()


def relevance(database_labels: Tensor, query_labels: Tensor, neighbours: Tensor) -> Tensor:
    """(queries x k) booleans: does each neighbour have its query's class."""
    return database_labels.to(neighbours.device)[neighbours] == \
        query_labels.to(neighbours.device).view(-1, 1)


def precision_at(relevant: Tensor, k: int) -> float:
    return float(relevant[:, :k].float().mean())


def mean_average_precision(relevant: Tensor, k: int) -> float:
    hits = relevant[:, :k].float()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device)
    precision = hits.cumsum(dim=1) / ranks
    average = (precision * hits).sum(dim=1) / hits.sum(dim=1).clamp(min=1)
    return float(average.mean())


def retrieval_metrics(settings: RetrievalSettings) -> list[str]:
    """The names of what ``retrieval_scores`` returns."""
    return [*map(schema.retrieval_precision, settings.ks), schema.retrieval_map(max(settings.ks))]


def retrieval_scores(
    database: Tensor, database_labels: Tensor, queries: Tensor, query_labels: Tensor,
    settings: RetrievalSettings,
) -> tuple[dict[str, float], Tensor]:
    """``retrieval_p<k>`` for every k and ``retrieval_map<K>`` for the largest K
    (unprefixed names), and the (queries x K) neighbour indices."""
    largest = max(settings.ks)
    neighbours = nearest(database, queries, largest, settings.backend)
    relevant = relevance(database_labels, query_labels, neighbours)
    values = [*(precision_at(relevant, k) for k in settings.ks),
              mean_average_precision(relevant, largest)]
    return dict(zip(retrieval_metrics(settings), values, strict=True)), neighbours


def examples_png(
    database_images: Tensor, database_labels: Tensor, query_images: Tensor,
    query_labels: Tensor, neighbours: Tensor, rows: int,
) -> bytes:
    """A grid: each row a query (grey frame) and its nearest database images, framed in
    green when of the query's class and red otherwise."""
    import torchvision

    rows = min(rows, query_images.shape[0])
    shown = min(5, neighbours.shape[1])
    relevant = relevance(database_labels, query_labels, neighbours).cpu()
    tiles = []
    for q in range(rows):
        tiles.append(_framed(query_images[q], (0.5, 0.5, 0.5)))
        for j in range(shown):
            colour = _RIGHT if relevant[q, j] else _WRONG
            tiles.append(_framed(database_images[int(neighbours[q, j])], colour))
    grid = torchvision.utils.make_grid(torch.stack(tiles), nrow=shown + 1, padding=2,
                                       pad_value=1.0)
    scale = max(1, 64 // query_images.shape[-1])
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    buffer = io.BytesIO()
    torchvision.utils.save_image(grid, buffer, format="png")
    return buffer.getvalue()


def _framed(image: Tensor, colour: tuple[float, float, float], width: int = 3) -> Tensor:
    """A uint8 (C, H, W) image as RGB floats inside a coloured frame."""
    x = image.float().div(255.0).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = x[:3]
    frame = torch.tensor(colour).view(3, 1, 1).expand(3, x.shape[1] + 2 * width,
                                                      x.shape[2] + 2 * width).clone()
    frame[:, width:-width, width:-width] = x
    return frame
