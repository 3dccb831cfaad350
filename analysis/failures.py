"""Failed trials: why they failed, and where in the search space.

A failed trial has no score, so importance and response curves cannot include it; left
out silently, a region where training diverges (NaN losses at low temperature,
out-of-memory at large batch) would look neutral. The report therefore gives, per method,
the failures grouped by reason and the failure rate along each parameter, over the
trials that ended (finished or failed), on the parameter's search scale:
``failures.csv`` (``method,param,value,failed,total``, ``value`` as in
``sensitivity.csv``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.scales import Scale, make_binning, n_bins

FAILURE_COLUMNS = ["method", "param", "value", "failed", "total"]
REASON_COLUMNS = ["reason", "trials", "example"]
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Failure))\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def reason_group(reason: object) -> str:
    """What failures are grouped by: the exception's name when the reason's last line
    starts with one (``NonFiniteLossError: loss became nan at epoch 3``), else that line
    with its numbers blanked; ``unknown`` without a reason."""
    if not isinstance(reason, str) or not reason.strip():
        return "unknown"
    line = [part for part in reason.strip().splitlines() if part.strip()][-1].strip()
    found = _EXCEPTION.match(line)
    return found.group(1) if found else _NUMBER.sub("#", line)[:80]


def reasons_table(failed: pd.DataFrame) -> pd.DataFrame:
    """Failed trials grouped by reason, most frequent first, each with one example."""
    if failed.empty:
        return pd.DataFrame(columns=REASON_COLUMNS)
    groups = failed["failure_reason"].map(reason_group)
    rows = [{"reason": group, "trials": int((groups == group).sum()),
             "example": str(failed.loc[groups == group, "failure_reason"].iloc[0] or "")[:300]}
            for group in groups.unique()]
    return pd.DataFrame(rows, columns=REASON_COLUMNS).sort_values(
        "trials", ascending=False, kind="stable", ignore_index=True)


def failure_rates(
    method: str, ended: pd.DataFrame, failed: pd.Series, scales: dict[str, Scale]
) -> pd.DataFrame:
    """Failed and total trials per bin of each parameter; ``ended`` holds the trials that
    finished or failed, ``failed`` flags the failed ones."""
    rows = []
    bins = n_bins(len(ended), len(scales))
    flags = np.asarray(failed, dtype=bool)
    for param, scale in scales.items():
        binning = make_binning(ended[param], scale, bins)
        codes = binning.assign(ended[param])
        for b, value in enumerate(binning.labels):
            members = codes == b
            rows.append({"method": method, "param": param, "value": value,
                         "failed": int(flags[members].sum()), "total": int(members.sum())})
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)
