"""Markdown of Tables 8.1-8.4 (and the adaptive attacker) from stego-table's summary, beside the
thesis's numbers (vanilla EfficientNet-b0). Only numbers the files decide are printed, so that a
run resumed with ``--resume`` writes the same bytes."""

from __future__ import annotations

from typing import Any

THESIS_81 = (82.8, 99.1, 115)  # vanilla EfficientNet-b0: Acc %, P_suc %, mean L2
THESIS_82 = {  # (attack, quantizer): P_suc %, mean L2, SRM, SCRMQ1, SRNet TPR5 %
    ("fgsm", "smart"): (89.7, 286, 72.00, 83.3, 93.5), ("pgd", "smart"): (98.6, 113, 65.02, 83.1, 93.8),
    ("cw", "smart"): (89.7, 97, 68.78, 83.6, 94.5), ("ddn", "round"): (83.2, 186, 79.53, 91.9, 94.8),
}
THESIS_83 = {  # (quantizer, Ch. 8's d_f): P_suc %, mean L2, SCRMQ1 TPR5 %, SRNet TPR5 %
    ("smart", 2): (98.6, 101, 83.1, 93.8), ("hill", 2): (98.6, 113, 78.0, 87.6), ("hill", 4): (98.9, 125, 76.0, 87.4),
    ("mipod", 2): (98.3, 176, 77.4, 86.6), ("mipod", 4): (98.7, 164, 74.4, 84.5),
    ("gina", 2): (98.5, 283, 24.4, 68.3), ("gina", 4): (98.8, 300, 18.6, 50.9),
}
THESIS_84 = {("smart", 2): 55.9, ("hill", 2): 53.4, ("hill", 4): 50.4, ("mipod", 2): 56.1, ("mipod", 4): 53.9,
             ("gina", 2): 77.7, ("gina", 4): 68.5}
NAMES = {"smart": "[12]", "round": "", "hill": "HILL", "mipod": "MiPOD", "gina": "GINA"}
ATTACKS = {"fgsm": "FGSM", "pgd": "PGD2", "cw": "CW", "ddn": "DDN"}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _label(v) -> str:
    if v.attack == "ddn":
        return "DDN"
    return f"{ATTACKS[v.attack]}+{NAMES[v.quantizer]}"


def _keys(det: dict[str, Any], training: str) -> list[str]:
    """Detector keys trained on ``training``, SRM before SCRMQ1, ridge before FLD."""
    order = {"srm": 0, "scrmq1": 1, "ridge": 0, "fld": 1}
    keys = [k for k in det if k.count("/") == 2 and k.endswith("/" + training)]
    return sorted(keys, key=lambda k: (order[k.split("/")[0]], order[k.split("/")[1]]))


def _head(keys: list[str], srnet: bool) -> list[str]:
    return [f"{k.split('/')[0].upper()} {k.split('/')[1]}" for k in keys] + (["SRNet"] if srnet else [])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(title: str, command: str, setup: str, head: list[str], rows: list[list[str]], notes: str = "") -> str:
    lines = [f"### {title}", "", f"Command: `{command}`", "", setup, "", _row(head), "|" + "---|" * len(head)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")


def tables(summary: dict[str, Any], plan, command: str, which: list[str]) -> dict[str, str]:
    """{"8.1": markdown, ...} for the tables in ``which`` (and "adaptive" when the plan has it)."""
    det = summary.get("detection", {})
    var = summary["variants"]
    srnet = det.get("srnet")
    train = plan.train.name
    keys = _keys(det, train)
    tpr_head = _head(keys, srnet is not None)
    first = plan.tests[0].name if plan.tests else None
    setup = (f"{summary['test_crops']} test crops of {summary['size']}×{summary['size']} px "
             f"({summary['test_correct']} classified correctly by {summary['model']}; attacked: "
             f"{var[first]['attacked'] if first else 0}); training pairs: {var[train]['pairs']} "
             f"(FGSM + [12])" + (f", SRNet {srnet['epochs']} epochs" if srnet else "") + ". TPR₅ %.")

    def tprs(name: str) -> list[str]:
        cells = [_pct(det[k]["tpr5"].get(name)) for k in keys]
        return cells + ([_pct(srnet["tpr5"].get(name))] if srnet else [])

    out: dict[str, str] = {}
    if "8.1" in which:
        v = var["test-pgd-smart-df1"]
        acc = summary["test_correct"] / max(1, summary["test_crops"])
        out["8.1"] = _table(
            "Table 8.1: robustness against PGD2 + [12] (best effort)", command, setup,
            ["model", "Acc %", "P_suc %", "mean L2", "thesis EfficientNet-b0: Acc / P_suc / L2"],
            [[summary["model"], _pct(acc), _pct(v["p_suc"]), f"{v['mean_l2']:.1f}" if v["mean_l2"] else "–",
              " / ".join(str(t) for t in THESIS_81)]])
    if "8.2" in which:
        rows = []
        for v in plan.tests82:
            s, th = var[v.name], THESIS_82.get((v.attack, v.quantizer))
            rows.append([_label(v), _pct(s["p_suc"]), f"{s['mean_l2']:.1f}" if s["mean_l2"] else "–", *tprs(v.name),
                         " / ".join(str(t) for t in th) if th else "–"])
        out["8.2"] = _table("Table 8.2: detection of each attack's files (detectors trained on FGSM + [12])",
                            command, setup, ["attack", "P_suc %", "mean L2", *tpr_head,
                                             "thesis P_suc / L2 / SRM / SCRMQ1 / SRNet"], rows)
    if "8.3" in which:
        rows = []
        for v in plan.tests83:
            s, th3 = var[v.name], THESIS_83.get((v.quantizer, v.df_ch8))
            rows.append([NAMES[v.quantizer], str(v.df_ch8), _pct(s["p_suc"]),
                         f"{s['mean_l2']:.1f}" if s["mean_l2"] else "–", *tprs(v.name),
                         " / ".join(str(t) for t in th3) if th3 else "–"])
        out["8.3"] = _table("Table 8.3: PGD2 + each quantizer (detectors trained on FGSM + [12])", command, setup,
                            ["quantizer", "d_f (Ch. 8)", "P_suc %", "mean L2", *tpr_head,
                             "thesis P_suc / L2 / SCRMQ1 / SRNet"], rows)
    if "8.4" in which and plan.retrain:
        keys4 = _keys(det, plan.retrain.name)
        rows = [[NAMES[v.quantizer], str(v.df_ch8), *(_pct(det[k]["tpr5"].get(v.name)) for k in keys4),
                 str(THESIS_84.get((v.quantizer, v.df_ch8), "–"))] for v in plan.tests83]
        setup4 = setup.replace("TPR₅ %.", f"Retrained on {var[plan.retrain.name]['pairs']} FGSM + GINA "
                               "(d_f 4) pairs. TPR₅ %.")
        out["8.4"] = _table("Table 8.4: detectors retrained on FGSM + GINA (d_f = 4)", command, setup4,
                            ["quantizer", "d_f (Ch. 8)", *_head(keys4, False), "thesis SCRMQ1"], rows)
    sel = det.get("selection") or {}
    adaptive = det.get("adaptive") or {}
    if sel or adaptive:
        rows = []
        for v in plan.adaptive:
            s, a = var[v.name], adaptive.get(v.name, {})
            rows.append([f"PGD2+{NAMES[v.quantizer]} d_f {v.df_ch8} vs SRNet (joint loss)", _pct(s["p_suc"]),
                         f"{s['mean_l2']:.1f}" if s["mean_l2"] else "–", *(_pct(a.get(k)) for k in keys),
                         *([_pct(a.get("srnet"))] if srnet else [])])
        if sel:
            first83 = plan.tests83[0].name
            crops = [sel[k]["crops"] for k in sel]
            rows.append([f"least detected of the {len(plan.tests83)} Table 8.3 files (per detector)",
                         _pct(max(crops) / max(1, var[first83]["attacked"])), "–",
                         *(_pct(sel[k]["tpr5"]) if k in sel else "–" for k in keys),
                         *([_pct(sel["srnet"]["tpr5"])] if srnet and "srnet" in sel else [])])
        out["adaptive"] = _table(
            "Adaptive attacker (thesis §8.5): the classifier and the detector at once", command, setup,
            ["attacker", "P_suc %", "mean L2", *tpr_head], rows,
            "Joint loss: max(classifier loss, weight · (s − τ)) through the differentiable detector, "
            "τ its 5% FPR threshold. Least detected: the attacker scores its files with the detector and "
            "submits the lowest (no gradient: SRM/SCRMQ1 histograms have none).")
    return out
