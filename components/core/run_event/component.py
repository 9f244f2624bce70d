"""KFP component: the pipeline's exit task, which logs how the run ended as one JSON line."""

from kfp import dsl

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def core_run_event(status: dsl.PipelineTaskFinalStatus, pipeline_name: str, run_id: str, run_events_root: str = "",
                   pipeline_root: str = ""):
    """Runs under `dsl.ExitHandler` whatever the outcome and prints one JSON line to its log: the gate's
    `distilled_model_eval` event when the run succeeded (read from `<run_events_root>/<run_id>/`, where the gate
    task copies it), otherwise a `distilled_model_run_failed` event with the pipeline, the run id, the state,
    the failed task as KFP reports it (the exit handler's group on KFP; its error message names the task where
    the backend says) and the time. A run that succeeded but whose gate event cannot be read logs
    `distilled_model_run_succeeded`, saying why.

    Args:
        status: The exit handler's final status (KFP fills it in).
        pipeline_name: The pipeline's name, recorded in the event.
        run_id: The run's id (the pipeline passes its run id placeholder).
        run_events_root: Where the gate task copied its event (gs:// or a folder); empty:
            `<pipeline_root>/events`.
        pipeline_root: The run's pipeline root (the pipeline passes its placeholder, which a KFP cluster does not
            fill in: set run_events_root there).
    """
    from mangadistill.core.events import emit_run_outcome, run_event_uri

    run_id = run_id or status.pipeline_job_resource_name
    emit_run_outcome(pipeline_name, run_id, status.state, run_event_uri(run_id, run_events_root, pipeline_root),
                     failed_task=status.pipeline_task_name, error=status.error_message)
