"""KFP component: publish the promoted cross-encoder reranker student as a versioned model folder."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def reranker_publish_model(
    student: Input[Model],
    quantized: Input[Model],
    report: Input[HTML],
    event: Input[Artifact],
    models_root: str,
    model_name: str,
    run_id: str,
    published: Output[Model],
):
    """Writes `<models_root>/<model_name>/<run_id>/`: the CrossEncoder folder, onnx/model_qint8_dynamic.onnx, the
    report, the event, a README.md model card (gates, data, teacher, intended use, how to load) and, last,
    version.json. Run it only when the gate promotes (`dsl.If`); it refuses an event without promote: true, and
    an existing complete version is left as it is (a retry is a no-op).

    Args:
        student: The student folder, from reranker_distillation_training.
        quantized: Its int8 ONNX folder, from reranker_quantization.
        report: The gate's HTML report.
        event: The gate's `distilled_model_eval` event.
        models_root: Where published models go: a gs:// prefix or a folder.
        model_name: The model's folder name under models_root.
        run_id: The version's folder name (the pipeline passes its run id).

    Returns:
        published: The version's URI; metadata version_uri, files, written.
    """
    from pathlib import Path

    from mangadistill.reranker.stages import run_reranker_publish

    version = run_reranker_publish(student.path, quantized.path, report.path, event.path, models_root,
                                   model_name, run_id)
    Path(published.path).write_text(version.uri + "\n")
    published.metadata.update(version.metadata())
