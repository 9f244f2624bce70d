"""KFP component: the int8 CPU variant of a one-logit cross-encoder (ONNX export + ONNX Runtime dynamic int8)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("quantization"), install_kfp_package=False)
def reranker_quantization(
    model: Input[Model],
    eval_candidates: Input[Dataset],
    quantized: Output[Model],
    metrics: Output[Metrics],
    max_length: int = 128,
    sample_pairs: int = 64,
):
    """Exports the cross-encoder to ONNX and quantizes it to dynamic int8 (MatMul and embedding Gather);
    measures size_ratio = fp32 ONNX / int8 ONNX and |fp32 score − int8 score| on sample pairs.

    Args:
        model: A one-logit cross-encoder folder (transformers sequence classification, num_labels=1).
        eval_candidates: The `rerank_candidates` contract; its first sample_pairs (query, candidate_text)
            pairs measure the fp32-vs-int8 score difference.
        max_length: Token limit of query + candidate text.
        sample_pairs: Pairs scored by both models to measure the score difference.

    Returns:
        quantized: A folder with `model.int8.onnx`, the tokenizer, config.json and quantization_report.json.
        metrics: Sizes (MiB) before and after, the size ratio, and the max and mean fp32-vs-int8 score
            differences.
    """
    from mangadistill.reranker.stages import run_reranker_quantization

    summary = run_reranker_quantization(model.path, quantized.path, eval_candidates.path, max_length=max_length,
                                        sample_pairs=sample_pairs)
    for name, value in summary.items():
        metrics.log_metric(name, value)
