"""KFP component: CPU/mobile int8 variant of a classifier or a one-logit cross-encoder (ONNX export + ONNX
Runtime dynamic int8); for the response student, bitsandbytes 8-bit and NF4 for GPU serving."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("quantization"), install_kfp_package=False)
def quantization(
    model: Input[Model],
    eval_set: Input[Dataset],
    quantized: Output[Model],
    metrics: Output[Metrics],
    max_length: int = 64,
    task: str = "intent",
    generation_prompts: int = 4,
    max_new_tokens: int = 32,
):
    """Exports the model to ONNX and quantizes it to dynamic int8 (MatMul and embedding Gather); response:
    quantizes the merged LoRA student with bitsandbytes (LLM.int8 and NF4) and measures it before and after.

    Args:
        model: A transformers sequence-classification folder (reranker: one logit).
        eval_set: intent: the `labelled_messages` contract, to measure the accuracy change; reranker: the
            `rerank_candidates` contract, to measure the fp32-vs-int8 score difference; response: the
            `response_eval` set, whose first prompts are generated from to measure throughput.
        max_length: Token limit per message (intent) or per query + candidate text (reranker).
        task: `intent`, `reranker` or `response`.
        generation_prompts: response only: eval prompts generated from (greedy, batch 1) per model.
        max_new_tokens: response only: tokens generated per prompt in the throughput measurement.

    Returns:
        quantized: A folder with `model.int8.onnx`, the tokenizer, config.json and quantization_report.json;
            response: `int8/` and `nf4/` (from_pretrained loads them quantized) and
            response_quantization_report.json (the student's measured tokens per second, which the gate prices).
        metrics: Size (MiB) before and after and the size ratio; intent: latency (ms, batch 1) and accuracy
            change; reranker: fp32-vs-int8 score differences; response: size, parameter memory, tokens per
            second and greedy agreement per variant.
    """
    from mangadistill.intent.stages import quantization_stage

    summary = quantization_stage(task, model.path, quantized.path, eval_set.path, max_length=max_length,
                                 response_options=dict(prompts=generation_prompts, max_new_tokens=max_new_tokens))
    for name, value in summary.items():
        metrics.log_metric(name, value)
