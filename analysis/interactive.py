"""The report's interactive view: per method, parallel coordinates of the searched
parameters and the metric, one line per configuration at the comparison budget.

Dragging along an axis selects a range and highlights the configurations that pass
through it, which answers "where do the good configurations sit?" for several
parameters at once. Each axis is the parameter's search scale (log10 ticks labelled with
plain values, categories by name); the line colour is the metric. plotly draws it; its
library is embedded once in the page, so the report stays one file that works offline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from analysis.method import MethodAnalysis
from analysis.scales import Scale, forward, order_key


def _dimension(name: str, values: pd.Series, scale: Scale) -> dict:
    if scale == "categorical":
        categories = sorted(values.dropna().unique(), key=order_key)
        codes = values.map({c: i for i, c in enumerate(categories)})
        return {"label": name, "values": codes.to_numpy(dtype=float),
                "tickvals": list(range(len(categories))),
                "ticktext": [str(c) for c in categories]}
    raw = values.to_numpy(dtype=float)
    axis = forward(raw, scale)
    if scale in ("log", "log1m"):
        # Ticks at the trials' own quantiles, labelled with the values a config would hold.
        ticks = np.unique(np.nanquantile(axis, [0, 0.25, 0.5, 0.75, 1]))
        shown = 10**ticks if scale == "log" else 1 - 10**ticks
        label = f"{name} (log)" if scale == "log" else f"{name} (log of 1 - {name})"
        return {"label": label, "values": axis, "tickvals": list(ticks),
                "ticktext": [f"{v:.3g}" for v in shown]}
    return {"label": name, "values": raw}


def parallel_coordinates(analysis: MethodAnalysis, metric: str, include_library: bool
                         ) -> str | None:
    """The view of one method as an HTML fragment, or None when it has no scored
    configuration or no parameter that varies. ``include_library``: embed plotly's
    library (once per page)."""
    scored = analysis.scored
    params = [p for p in analysis.params if p in analysis.scales]
    if scored is None or scored.frame.empty or not params:
        return None
    frame, scores = scored.frame, scored.scores.to_numpy(dtype=float)
    dimensions = [_dimension(p, frame[p], analysis.scales[p]) for p in params]
    dimensions.append({"label": metric, "values": scores})
    figure = go.Figure(go.Parcoords(
        line={"color": scores, "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": metric}}},
        dimensions=dimensions,
    ))
    figure.update_layout(
        title={"text": f"{analysis.method}: {len(frame)} configurations at "
                       f"{scored.budget:g} epochs (drag along an axis to select)",
               "font": {"size": 13}},
        margin={"l": 60, "r": 40, "t": 70, "b": 30}, height=420, autosize=True,
    )
    return pio.to_html(figure, full_html=False, include_plotlyjs=include_library,
                       # plotly.js 4 shows a "Share chart" button that uploads the
                       # figure, the study's values with it, to Plotly's cloud.
                       config={"displaylogo": False, "responsive": True,
                               "showSendToCloud": False},
                       default_width="100%")
