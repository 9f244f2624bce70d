"""The response gate's HTML report: run facts, the judge's verdicts, the human review, slice scores, the
hallucination rate, the cost comparison and the failure modes."""

from __future__ import annotations

from collections import Counter

from mangadistill.core import report as r
from mangadistill.response.contracts import RESPONSE_EVAL_SLICES
from mangadistill.response.gate.judge import (
    JUDGE_CONSISTENCY_WARNING,
    PROXY_METRIC,
    PROXY_SIMILARITY_THRESHOLD,
    PreferenceResult,
)


def report_html(metrics, details, decision, diagnostics, review, student_name, teacher_name, judge) -> str:
    """The HTML report of one gate run (`evaluate_response_student` details, the decision, the diagnostics)."""
    preference: PreferenceResult | None = details["preference"]
    slices = details["slices"]
    sections: list[r.Section] = [
        r.KeyValueSection("Run", {
            "student": student_name, "teacher": teacher_name,
            "judge": (f"{judge.model} ({preference.prompt_version}"
                      f"{', guided choice' if details['judge_guided_choice'] else ''})" if preference
                      else "none (no judge API given)"),
            "evaluation rows (human-reviewed set)": metrics["eval_rows"],
            "evaluation rows quarantined": metrics["eval_quarantined_rows"],
            "eval prompts left unanswered: student / base student / teacher": " / ".join(
                f"{metrics[f'{prefix}unanswered_prompts']:g}" for prefix in ("", "base_", "teacher_")),
            "human review": review.status,
        }),
    ]
    if preference:
        outcome_names = ("student preferred", "tie", "teacher preferred", "failed")
        by_order = {"teacher first": preference.outcome_shares("teacher_first"),
                    "student first": preference.outcome_shares("student_first"),
                    "both orders": preference.outcome_shares()}
        sections += [
            r.TableSection("Teacher preference match (pairwise judge, both orders)",
                           ["judgments", "match rate", "failed", "unparseable", "position A chosen",
                            "order-consistent prompts"],
                           [[metrics["judge_judgments"], metrics["teacher_preference_match"],
                             metrics["judge_failed_judgments"], metrics["judge_unparseable_judgments"],
                             metrics["judge_position_a_share"], metrics["judge_order_consistency"]]]),
            r.FigureSection("Judge verdicts by order", r.grouped_bar_chart(
                list(by_order), {name: [shares[name] for shares in by_order.values()] for name in outcome_names},
                title="Pairwise judge: teacher vs student answer", ylabel="share of judgments")),
        ]
        sections.append(calibration_section(metrics, details["calibration"]))
        consistency = metrics["judge_order_consistency"]
        if not consistency >= JUDGE_CONSISTENCY_WARNING:
            sections.append(r.ParagraphSection("The judge is not reliable here", (
                f"It gave the same verdict in both orders for {consistency:.0%} of the prompts and chose "
                f"position A in {metrics['judge_position_a_share']:.0%} of its judgments: it "
                "judges the position more than the answers, so the match rate says little about the student "
                "(a judge that always picks one position scores exactly 0.5). Use a stronger judge model.")))
    elif PROXY_METRIC in metrics:
        sections.append(r.ParagraphSection("Teacher preference match: offline PROXY only", (
            f"No judge API was given. {PROXY_METRIC} = {r.format_value(metrics[PROXY_METRIC])}: the share of "
            f"prompts whose student answer has embedding cosine >= {PROXY_SIMILARITY_THRESHOLD:g} to the teacher's. "
            "It is not a preference judgment and passes a gate only if the gates file names it.")))
    if review.win_rate is not None:
        names = sorted(review.win_rate_by_slice)
        sections.append(r.FigureSection("Human win rate vs base student, by slice", r.grouped_bar_chart(
            [*names, "all"], {"student": [*(review.win_rate_by_slice[n] for n in names), review.win_rate]},
            title="Blinded A/B reviews: (wins + ties/2) / reviews", ylabel="win rate")))
    else:
        sections.append(r.ParagraphSection("Human win rate vs base student", review.status))
    slice_rows = [[name, metrics[f"slice_{name}_rows"], slices["student"][name], slices["base_student"][name],
                   slices["teacher"][name], metrics[f"slice_{name}_vs_base"]] for name in RESPONSE_EVAL_SLICES]
    sections += [
        r.TableSection("Fixed human-reviewed set, slice by slice (share of rows passing the slice check)",
                       ["slice", "rows", "student", "base student", "teacher", "student - base"], slice_rows),
        r.FigureSection("Slice scores", r.grouped_bar_chart(
            list(RESPONSE_EVAL_SLICES), {name.replace("_", " "): [slices[name][s] for s in RESPONSE_EVAL_SLICES]
                                         for name in ("teacher", "student", "base_student")},
            title="Slice scores on the human-reviewed set", ylabel="share passing")),
        r.TableSection("Catalog hallucination rate (fact checker, evaluation answers)",
                       ["model", "hallucination rate"],
                       [["student", metrics["hallucination_rate"]],
                        ["base student", metrics["base_hallucination_rate"]],
                        ["teacher", metrics["teacher_hallucination_rate"]]]),
        *cost_sections(metrics, details),
        r.FigureSection("Cost comparison", r.grouped_bar_chart(
            ["USD per 1K responses"], {"teacher": [_number(metrics["teacher_cost_per_1k_usd"])],
                                       "student": [_number(metrics["student_cost_per_1k_usd"])]},
            title=f"cost reduction {r.format_value(metrics['cost_reduction'])}", ylabel="USD")),
        r.TableSection("Failure modes",
                       ["failure", "detection", "detected", "evidence", "figure", "fix"],
                       [d.row() for d in diagnostics]),
    ]
    return r.render_html_report(f"Response distillation: {student_name}", decision, sections)


def calibration_section(metrics, calibration) -> r.Section:
    """The judge checked on hand-judged pairs first (`calibration`): κ and the rest, then a person's choice
    against the judge's per kind of disagreement."""
    names = ("pairs", "kappa", "agreement", "order_consistency", "position_a_share", "failed_judgments")
    disagreements = Counter((pair.preferred, choice) for pair, choice in zip(calibration.pairs, calibration.choices,
                                                                            strict=True) if pair.preferred != choice)
    summary = ", ".join(f"person {human} / judge {judge}: {count}" for (human, judge), count in
                        disagreements.most_common()) or "none"
    return r.TableSection(
        "Judge calibration (hand-judged pairs, checked before the judge is trusted)",
        ["pairs", "Cohen's κ", "agreement", "order-consistent pairs", "position A chosen", "failed judgments",
         "disagreements"],
        [[*(metrics[f"judge_calibration_{name}"] for name in names), summary]])


def cost_sections(metrics, details) -> list[r.Section]:
    """The cost table (per model: basis, tokens/s median and min – max over the rounds, the measurement's size,
    USD/hour, mean response tokens, USD per 1K responses; then the reduction and its per-round spread) and how
    the side-by-side measurement was taken."""
    throughput = details["throughput"]
    sizing = (f"{metrics['cost_repeats']:g} × {metrics['cost_prompts']:g} × {metrics['cost_max_new_tokens']:g}"
              if throughput else "")
    bases = {"student": (f"measured side by side on {throughput.device}, priced as "
                         f"{details['student_hardware'] or 'n/a'}" if throughput else "not measured"),
             "teacher": details["teacher_cost_basis"]}
    rows = []
    for name, basis in bases.items():
        median = metrics[f"cost_{name}_tokens_per_s_median"]
        spread = "" if median is None else " – ".join(
            r.format_value(metrics[f"cost_{name}_tokens_per_s_{end}"]) for end in ("min", "max"))
        rows.append([name, basis, median, spread, sizing if median is not None else "",
                     metrics[f"{name}_usd_per_hour"], metrics[f"{name}_mean_response_tokens"],
                     metrics[f"{name}_cost_per_1k_usd"]])
    rows.append(["cost reduction", "1 − student / teacher (medians)", "",
                 f"per-round spread {r.format_value(metrics['cost_reduction_spread'])}", sizing, "", "",
                 metrics["cost_reduction"]])
    how = ("Teacher and student generate in this task on the same prompts (the first evaluation prompts, the "
           "same chat prompt for both), greedy, batch 1, exactly the stated new tokens each: one warm-up call "
           "each, then the rounds, each prompt by the teacher then the student (ABAB), so a change in machine "
           "load hits both. "
           "Cost per 1K = USD per hour / (median tokens/s × 3600 / mean response tokens) × 1000, with the mean "
           "completion tokens of the evaluation answers; the spread is max − min of the reduction computed "
           f"round by round. Hardware prices: {details['hardware_version']}.")
    if throughput is not None and "teacher" not in throughput.tokens_per_second:
        how += (" The teacher is a managed API: its side is the usage cost it recorded per call, and only the "
                "student was measured (warm-up, then the rounds).")
    return [
        r.TableSection("Cost per 1K responses, measured side by side",
                       ["model", "basis", "tokens/s median", "tokens/s min – max", "rounds × prompts × tokens",
                        "USD / hour", "mean response tokens", "USD per 1K responses"], rows),
        r.ParagraphSection("How cost was measured", how),
    ]


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)
