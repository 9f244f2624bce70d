"""KFP component: the intent student's CPU/mobile int8 variant (ONNX export + ONNX Runtime dynamic int8)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("quantization"), install_kfp_package=False)
def intent_quantization(
    model: Input[Model],
    eval_set: Input[Dataset],
    quantized: Output[Model],
    metrics: Output[Metrics],
    max_length: int = 64,
):
    """Exports the classifier to ONNX and quantizes it to dynamic int8 (MatMul and embedding Gather), then
    measures it before and after on the human-labelled split.

    Args:
        model: A transformers sequence-classification folder (the student).
        eval_set: The `labelled_messages` contract, to measure the accuracy change.
        max_length: Token limit per message.

    Returns:
        quantized: A folder with `model.int8.onnx`, the tokenizer, config.json and quantization_report.json.
        metrics: Size (MiB) before and after, size_ratio = fp32 ONNX / int8 ONNX, batch-1 latency (ms) and
            accuracy_delta = int8 accuracy − fp32 accuracy.
    """
    from mangadistill.intent.stages import run_quantization

    summary = run_quantization(model.path, quantized.path, eval_set.path, max_length=max_length)
    for name, value in summary.items():
        metrics.log_metric(name, value)
