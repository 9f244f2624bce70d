"""KFP component: the pipeline's exit task, which logs how the run ended as one JSON line."""

from kfp import dsl

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def core_run_event(status: dsl.PipelineTaskFinalStatus, pipeline_name: str, run_id: str, gate_event_uri: str):
    """Runs under `dsl.ExitHandler` whatever the outcome and prints one JSON line to its log: the gate's
    `distilled_model_eval` event when the run succeeded (read from gate_event_uri, where the gate task copies
    it), otherwise a `distilled_model_run_failed` event with the pipeline, the run id, the state, the failed
    task as KFP reports it (the exit handler's group on KFP; its error message names the task where the backend
    says) and the time. A successful run whose gate event cannot be read is reported as failed, saying why.

    Args:
        status: The exit handler's final status (KFP fills it in).
        pipeline_name: The pipeline's name, recorded in the event.
        run_id: The run's id (the pipeline passes its run id placeholder).
        gate_event_uri: Where the gate task copied its event (under the pipeline root).
    """
    from mangadistill.core.events import emit_run_outcome

    emit_run_outcome(pipeline_name, run_id or status.pipeline_job_resource_name, status.state, gate_event_uri,
                     failed_task=status.pipeline_task_name, error=status.error_message)
