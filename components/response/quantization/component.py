"""KFP component: the response student in bitsandbytes 8-bit and NF4 for GPU serving, measured before and after."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("quantization"), install_kfp_package=False)
def response_quantization(
    model: Input[Model],
    eval_set: Input[Dataset],
    quantized: Output[Model],
    metrics: Output[Metrics],
    generation_prompts: int = 4,
    max_new_tokens: int = 32,
):
    """Quantizes the merged LoRA student with bitsandbytes (LLM.int8 and NF4) and measures its size, memory and
    greedy generation throughput before and after, on this machine.

    Args:
        model: The student: a response_distillation_training output (with `merged/`) or a causal LM folder.
        eval_set: The `response_eval` set, whose first prompts are generated from to measure throughput.
        generation_prompts: Eval prompts generated from (greedy, batch 1) per model.
        max_new_tokens: Tokens generated per prompt in the throughput measurement.

    Returns:
        quantized: `int8/` and `nf4/` (from_pretrained loads them quantized) and
            response_quantization_report.json (the student's measured tokens per second, which the gate prices).
        metrics: Size, parameter memory, tokens per second and greedy agreement per variant, and their ratios
            to the unquantized student.
    """
    from mangadistill.response.stages import run_response_quantization

    summary = run_response_quantization(model.path, quantized.path, eval_set.path, prompts=generation_prompts,
                                        max_new_tokens=max_new_tokens)
    for name, value in summary.items():
        metrics.log_metric(name, value)
