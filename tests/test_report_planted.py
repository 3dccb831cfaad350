"""``sslstudy analyze`` end to end on one planted study whose answers are known: every
table, the summary, the warnings and the figures of the report.

Method ``alpha`` (search space recorded: lr log-scaled, b linear, opt categorical) has
36 configurations stopped ASHA-style at 2, 4 and 8 epochs. Its score at 8 epochs rises
with lr over its three decades; opt has no effect; its ranking after 2 epochs is the
reverse of the final one. Six of its finished configurations were run with three more
seeds (seed noise 0.01), and ten trials with b above 0.8 failed (NaN losses and
out-of-memory errors). Method ``beta`` (no recorded space: scales inferred) has 20 plain
configurations, weaker and without replicates or failures.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from browser import Chromium, find_chromium
from planted import Trial, create_experiment, uniform_design, write_study

from study.cli import main
from tracking import schema

NOISE = 0.01
#: What alpha's study recorded as its references: the random-init encoder, chance.
REFERENCES = {"random_init_knn_acc": 0.2, "chance_acc": 0.125}
#: How the planted study says it searched: TPE after 4 random trials.
TPE_STUDY = {schema.STUDY_PARAM_SAMPLER: "tpe", schema.STUDY_PARAM_STARTUP: "4",
             schema.STUDY_PARAM_SAMPLES: "64"}
SPACES = {
    "alpha": {"params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        "b": {"type": "float", "low": 0.0, "high": 1.0, "scale": "linear"},
        "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
    }, "fixed": {}},
}


def _quality(lr: pd.Series) -> np.ndarray:
    return (np.log10(lr) + 4) / 3


def _alpha(rng: np.random.Generator) -> list[Trial]:
    design = uniform_design(rng, 36, {"lr": ("log", (1e-4, 1e-1)), "b": ("linear", (0, 0.8)),
                                      "opt": ("categorical", ["adam", "sgd"])})
    quality = _quality(design["lr"])
    trials = []
    for i, row in design.iterrows():
        q = quality[i]
        reached = 8 if i < 12 else 4 if i < 24 else 2
        means = {2: 0.3 - 0.1 * q, 4: 0.35 + 0.05 * q, 8: 0.5 + 0.3 * q}
        runs = 4 if i < 6 else 1
        for seed in range(runs):
            values = {s: means[s] + rng.normal(0, NOISE) for s in means if s <= reached}
            status = schema.COMPLETED if reached == 8 else schema.STOPPED_EARLY
            trials.append(Trial("alpha", {**row.to_dict(), "seed": seed},
                                {"knn_acc": values}, status, max_budget=8))
    for i in range(10):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "b": float(rng.uniform(0.8, 1.0)),
                  "opt": "adam", "seed": 0}
        reason = (f"Traceback (most recent call last):\nNonFiniteLossError: loss became nan "
                  f"at epoch {i % 3 + 1}" if i < 7 else
                  "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
        trials.append(Trial("alpha", params, {}, schema.FAILED, max_budget=8, reason=reason))
    return trials


def _beta(rng: np.random.Generator) -> list[Trial]:
    design = uniform_design(rng, 20, {"lr": ("log", (1e-4, 1e-1)), "b": ("linear", (0, 1))})
    return [Trial("beta", {**row.to_dict(), "seed": 0},
                  {"knn_acc": {8: 0.45 + 0.1 * _quality(pd.Series([row["lr"]]))[0]
                               + rng.normal(0, NOISE)}}, max_budget=8)
            for _, row in design.iterrows()]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("planted")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client, experiment_id = create_experiment(uri, "planted")
    rng = np.random.default_rng(0)
    write_study(client, experiment_id, _alpha(rng) + _beta(rng), SPACES, ("knn_acc", "max"),
                TPE_STUDY)
    (parent,) = [r for r in client.search_runs([experiment_id])
                 if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDY]
    for key, value in REFERENCES.items():
        client.log_metric(parent.info.run_id, schema.method_key("alpha", key), value)
    out = tmp / "report"
    assert main(["analyze", "--experiment", "planted", "--tracking-uri", uri,
                 "--out", str(out)]) == 0
    return out


def _read(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / name)


def test_importance_per_budget_with_intervals_and_null(report: Path) -> None:
    table = _read(report, "importance.csv")
    assert list(table.columns) == ["method", "param", "importance", "low", "high",
                                   "null_high", "significant", "evaluator", "budget"]
    alpha = table[table["method"] == "alpha"]
    # 36 configurations reach 2 epochs, 24 reach 4, 12 reach 8; 6 are needed for 3
    # parameters: all three budgets are analysed.
    assert sorted(alpha["budget"].unique()) == [2.0, 4.0, 8.0]
    final = alpha[alpha["budget"] == 8.0].set_index("param")
    assert set(final.index) == {"lr", "b", "opt"}  # never seed
    assert final.loc["lr", "significant"] and not final.loc["opt", "significant"]
    assert (table["low"] <= table["importance"] + 1e-12).all()
    assert (table["importance"] <= table["high"] + 1e-12).all()
    assert set(table["evaluator"]) == {"additive_fanova"}
    beta = table[table["method"] == "beta"].set_index("param")
    assert beta.loc["lr", "significant"] and set(beta["budget"]) == {8.0}


def test_budgets_default_to_the_largest_with_enough_trials_and_reversals_warn(
    report: Path,
) -> None:
    budgets = _read(report, "budgets.csv")
    assert list(budgets.columns) == ["method", "budget_a", "budget_b", "spearman",
                                     "spearman_low", "spearman_high", "n"]
    alpha = budgets[budgets["method"] == "alpha"].set_index(["budget_a", "budget_b"])
    assert alpha.loc[(2.0, 8.0), "spearman"] < -0.5
    assert alpha.loc[(4.0, 8.0), "spearman"] > 0.5
    # Configurations, not runs: the replicates of a configuration count once.
    assert alpha.loc[(2.0, 8.0), "n"] == 12 and alpha.loc[(2.0, 4.0), "n"] == 24
    text = html.unescape((report / "report.html").read_text())
    assert "the ranking at 2 epochs does not predict the ranking at 8 epochs" in text
    assert "ranking at 4 epochs does not" not in text
    sensitivity = _read(report, "sensitivity.csv")
    assert "alpha: knn_acc vs lr" in text or (report / "plots" / "alpha_lr.png").is_file()
    assert set(sensitivity["method"]) == {"alpha", "beta"}


def test_noise_floor_from_replicates(report: Path) -> None:
    noise = _read(report, "noise.csv").set_index("method")
    assert list(noise.columns) == ["metric", "std", "configs", "runs"]
    assert noise.loc["alpha", "std"] == pytest.approx(NOISE, rel=0.3)
    assert (noise.loc["alpha", "configs"], noise.loc["alpha", "runs"]) == (6, 24)
    assert noise.loc["beta", "configs"] == 0 and np.isnan(noise.loc["beta", "std"])
    effects = _read(report, "effects.csv")
    alpha_lr = effects[(effects["method"] == "alpha") & (effects["param"] == "lr")].iloc[0]
    assert str(alpha_lr["exceeds_noise"]) == "True"
    assert alpha_lr["effect"] == pytest.approx(0.3, abs=0.08)
    text = html.unescape((report / "report.html").read_text())
    assert "sslstudy confirm <study dir> --top 3 --seeds 3" in text


def test_failures_grouped_and_located(report: Path) -> None:
    failures = _read(report, "failures.csv")
    assert list(failures.columns) == ["method", "param", "value", "failed", "total"]
    b = failures[(failures["method"] == "alpha") & (failures["param"] == "b")]
    b = b.assign(value=b["value"].astype(float)).sort_values("value")
    assert b["failed"].iloc[-1] > 0 and b["failed"].iloc[:2].sum() == 0
    assert b["failed"].sum() == 10 and b["total"].sum() == 36 + 18 + 10
    text = (report / "report.html").read_text()
    assert "NonFiniteLossError" in text and "RuntimeError" in text
    assert "failed trials (10 of 64)" in text


def test_summary_recommends_the_best_configuration(report: Path) -> None:
    text = html.unescape((report / "report.html").read_text())
    summary = text[text.index('">Summary</h2>'):text.index('">Overview</h2>')]
    snippet = re.search(r"<pre># paste under methods.alpha.space[^\n]*\n(.*?)</pre>", summary,
                        re.S).group(1)
    recommended = yaml.safe_load(snippet)
    assert set(recommended) == {"lr", "b", "opt"}
    runs = pd.read_parquet(report / "runs.parquet")
    assert "seed" in runs and "seed" not in recommended
    finals = runs[(runs["method"] == "alpha") & (runs["budget"] == 8.0)]
    best = finals.loc[finals.groupby(["lr", "b"])["final_knn_acc"].transform("mean").idxmax()]
    assert recommended["lr"] == pytest.approx(best["lr"], rel=1e-3)
    assert "+- 0.01" in summary or "+- 0.009" in summary or "+- 0.011" in summary
    assert "Matter beyond chance" in summary and "noise unknown" in summary


def test_importance_over_tpe_trials_says_what_tpe_costs_it(report: Path) -> None:
    text = html.unescape((report / "report.html").read_text())
    found = re.findall(r"(\d+) of the (\d+) search trials come from a TPE search", text)
    assert len(found) == 2 and ("20", "20") in found, found
    assert "search with search.sampler: qmc" in text


def test_methods_are_compared_at_one_budget_on_a_common_number_of_trials(
    report: Path,
) -> None:
    comparison = _read(report, "comparison.csv").set_index("method")
    assert set(comparison["budget"]) == {8.0}
    assert set(comparison["common_n"]) == {12}
    assert comparison.loc["alpha", "trials"] == 12 and comparison.loc["beta", "trials"] == 20
    assert comparison.loc["alpha", "expected_best"] > comparison.loc["beta", "expected_best"]
    # beta's best of 20 is put on alpha's 12: its expected best of 12 is lower.
    assert comparison.loc["beta", "expected_best"] < comparison.loc["beta", "best"]
    assert comparison.loc["alpha", "expected_best"] == comparison.loc["alpha", "best"]
    assert comparison.loc["beta", "best_runs"] == 1
    assert comparison.index[0] == "alpha"


def test_scales_come_from_the_space_or_are_named_as_inferred(report: Path) -> None:
    text = html.unescape((report / "report.html").read_text())
    alpha = text[text.index('">alpha</h2>'):text.index('">beta</h2>')]
    beta = text[text.index('">beta</h2>'):]
    def scale(section: str, param: str) -> tuple[str, str]:
        found = re.search(rf"<td>{param}</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", section)
        return found.group(1), found.group(2)

    assert scale(alpha, "lr") == ("log10", "search space")
    assert scale(alpha, "opt") == ("categories", "search space")
    assert scale(beta, "lr") == ("log10", "inferred") and scale(beta, "b") == ("linear",
                                                                               "inferred")
    plots = {p.name for p in (report / "plots").iterdir()}
    assert {"alpha_lr.png", "alpha_b.png", "alpha_opt.png", "alpha_importance.png",
            "alpha_importance_by_budget.png", "beta_lr.png",
            "method_comparison.png"} <= plots
    assert any(p.startswith("alpha_heatmap_lr_") for p in plots)


def test_learning_curves_references_and_links(report: Path) -> None:
    text = html.unescape((report / "report.html").read_text())
    alpha = text[text.index('">alpha</h2>'):text.index('">beta</h2>')]
    assert (report / "plots" / "alpha_learning_curves.png").is_file()
    assert "learning curves" in alpha and "random initialisation: 0.2000" in alpha
    assert "most frequent class: 0.1250" in alpha
    assert text.count("<script") >= 2 and 'src="http' not in text, "self-contained"
    # Without a tracking server there is no URL to link runs to; the table says how.
    assert "With a tracking server, each name links to its run" in text
    assert "None" not in text[text.index("all runs ("):]


def test_the_report_is_attached_to_the_study_run(report: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{report.parent / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("planted").experiment_id])
        if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDY]
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, schema.REPORT_DIR)}
    assert {"report/report.html", "report/importance.csv"} <= attached


@pytest.mark.skipif(find_chromium() is None and not os.environ.get("CI"),
                    reason="needs Debian's chromium (.ci/run installs it)")
def test_the_report_renders_in_a_browser(report: Path, tmp_path: Path) -> None:
    """Headless Chromium opens the page as a reader would: no script error, every figure
    decoded, nothing wider than the window (details opened too), the interactive view
    drawn."""
    width = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    with Chromium(width=1280, height=900) as browser:
        browser.open((report / "report.html").as_uri())
        assert browser.errors() == []
        broken = browser.evaluate("[...document.images].filter(i => !i.complete || "
                                  "i.naturalWidth === 0).map(i => i.alt)")
        assert broken == []
        assert browser.evaluate("document.images.length") >= 10
        assert browser.wait_until("document.querySelectorAll('.js-plotly-plot svg').length"
                                  " >= 2", timeout_s=30)
        scroll, client = browser.evaluate(width)
        assert scroll <= client, "content wider than the page"
        # plotly.js 4's "Share chart" would upload the study's values to Plotly's cloud.
        buttons = browser.evaluate("[...document.querySelectorAll('.modebar-btn')]"
                                   ".map(b => b.getAttribute('data-title'))")
        assert "Download plot as a PNG" in buttons and "Share chart..." not in buttons
        links = browser.evaluate("[...document.querySelectorAll('nav a')].map(a => "
                                 "[a.textContent, !!document.getElementById("
                                 "a.hash.slice(1))])")
        assert [title for title, _ in links][:2] == ["Summary", "Overview"]
        assert all(found for _, found in links) and len(links) >= 4
        # Printing (or saving as PDF) unfolds the folded tables.
        browser.evaluate("dispatchEvent(new Event('beforeprint'))")
        assert browser.evaluate("[...document.querySelectorAll('details')].every(d => d.open)")
        scroll, client = browser.evaluate(width)
        assert scroll <= client, "an opened table is wider than the page"
        # A figure is shown at most at its own size: never stretched.
        stretched = browser.evaluate(
            "[...document.images].filter(i => i.width > i.naturalWidth + 1 || "
            "i.height > i.naturalHeight + 1).map(i => i.alt)")
        assert stretched == []
        assert browser.errors() == []


def test_trials_link_to_their_runs_when_the_store_has_a_url(report: Path) -> None:
    from analysis.html import _runs_section
    from tracking.uris import runs_view_url

    runs = pd.read_parquet(report / "runs.parquet")
    page = _runs_section(runs, ["lr", "b", "opt"], "knn_acc",
                         lambda run_id: runs_view_url("http://tracking:5000", "7", run_id))
    assert page.count('<a href="http://tracking:5000/#/experiments/7/runs/') == len(runs)
    first = runs.iloc[0]
    assert f'/runs/{first["run_id"]}?workflowType=machine_learning">{first["run_name"]}</a>' \
        in html.unescape(page)
