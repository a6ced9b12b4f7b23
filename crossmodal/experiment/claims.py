"""The paper's claims, checked on the finished runs: a verdict for each, with its evidence per seed.

A claim compares rows, so it is judged on the seeds in which every one of its rows finished
(seed s of one row against seed s of another: the same data order and initialisation draw). Its
verdict is read on the mean over those seeds; how many seeds agree on their own says whether the
verdict rests on a real difference; fewer seeds than the experiment's make it provisional. Each
compared pair also gets Welch's t-test on its per-seed values: with 3 seeds a row, a difference of
one or two seed spreads is often not resolved, and a verdict on the means alone would hide that.
"""

from __future__ import annotations

from typing import Any

from crossmodal.experiment.manifest import Claim, Experiment
from crossmodal.experiment.records import FINISHED, Outcome


def _holds(claim: Claim, epe: dict[str, float]) -> bool:
    if claim.kind == "ratio":
        first, second = claim.rows
        return epe[first] / epe[second] <= claim.at_most
    return all(epe[a] > epe[b] for a, b in zip(claim.rows, claim.rows[1:]))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that rows a and b have the same mean EPE; None with fewer
    than 2 seeds in either (no spread to judge by). Two rows each constant over the seeds, where the
    test is undefined, give 1 when equal and 0 when not."""
    from scipy import stats  # imported here: only tables need it, not the CLI's start-up

    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _p_text(p: float | None) -> str:
    return "—" if p is None else "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _pairs(claim: Claim) -> list[tuple[str, str]]:
    # The rows a verdict turns on: the ratio's two, or each neighbour in the claimed order.
    return list(zip(claim.rows, claim.rows[1:]))


def check_claims(exp: Experiment, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One result per claim of ``exp``: the seeds judged, each row's mean EPE over them, the ratio
    (ratio claims), the verdict on the means, and the verdict of each seed alone."""
    epe = {(o.row, o.seed): o.metrics["epe_mean"] for o in outcomes if o.status in FINISHED}
    results = []
    for claim in exp.claims:
        seeds = [s for s in exp.seeds if all((r, s) in epe for r in claim.rows)]
        result: dict[str, Any] = {"text": claim.text, "kind": claim.kind, "rows": claim.rows, "at_most": claim.at_most,
                                  "seeds": seeds, "of_seeds": len(exp.seeds)}
        if seeds:
            means = {r: sum(epe[(r, s)] for s in seeds) / len(seeds) for r in claim.rows}
            result["means"] = means
            result["holds"] = _holds(claim, means)
            result["per_seed"] = [_holds(claim, {r: epe[(r, s)] for r in claim.rows}) for s in seeds]
            result["pairs"] = [{"rows": [a, b], "difference": means[a] - means[b],
                                "p": welch_p([epe[(a, s)] for s in seeds], [epe[(b, s)] for s in seeds])}
                               for a, b in _pairs(claim)]
            if claim.kind == "ratio":
                first, second = claim.rows
                result["ratio"] = means[first] / means[second]
                result["ratio_per_seed"] = [epe[(first, s)] / epe[(second, s)] for s in seeds]
        results.append(result)
    return results


def claims_markdown(exp: Experiment, results: list[dict[str, Any]]) -> list[str]:
    """The table's section on the claims (no lines when the experiment states none)."""
    if not results:
        return []
    labels = {r.name: r.label for r in exp.rows}
    lines = ["", "## The paper's claims, checked", "",
             "Each claim is judged on the mean test EPE over the seeds in which all its rows finished; "
             "\"seeds agreeing\" counts the seeds that give the same verdict alone. Fewer seeds than the "
             "experiment's make a verdict provisional. Differences: each compared pair's mean EPE difference, "
             "with the two-sided p of Welch's t-test on the per-seed values (— with fewer than 2 seeds).", "",
             "| claim | measured | per seed | verdict | seeds agreeing | differences (p) |",
             "|---|---|---|---|---|---|"]
    for res in results:
        if not res["seeds"]:
            lines.append(f"| {res['text']} | — | — | not run yet | — | — |")
            continue
        means = res["means"]
        if res["kind"] == "ratio":
            first, second = res["rows"]
            measured = f"{labels[first]} / {labels[second]} = {res['ratio']:.3f} (bound {res['at_most']:g})"
            per_seed = ", ".join(f"{v:.3f}" for v in res["ratio_per_seed"])
        else:
            measured = f"{labels[res['rows'][0]]} {means[res['rows'][0]]:.2f}"
            for a, b in zip(res["rows"], res["rows"][1:]):
                measured += f" {'>' if means[a] > means[b] else '≤'} {labels[b]} {means[b]:.2f}"
            measured += " mm"
            per_seed = ", ".join("yes" if ok else "no" for ok in res["per_seed"])
        n, total = len(res["seeds"]), res["of_seeds"]
        verdict = ("**holds**" if res["holds"] else "**fails**") + (f" (provisional: {n} of {total} seeds)" if n < total else "")
        agreeing = sum(ok == res["holds"] for ok in res["per_seed"])
        seeds = ("seed " if n == 1 else "seeds ") + ", ".join(str(s) for s in res["seeds"])
        differences = "; ".join(
            f"{labels[p['rows'][0]]} − {labels[p['rows'][1]]} {p['difference']:+.2f} mm "
            f"({_p_text(p['p'])})" for p in res["pairs"])
        lines.append(f"| {res['text']} | {measured} | {per_seed} ({seeds}) | {verdict} | {agreeing} of {n} | {differences} |")
    return lines
