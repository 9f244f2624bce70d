"""KFP component: the teacher LLM answers every (redacted) response prompt, grounded on retrieved catalog records."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def response_teacher_labeling(
    prompts: Input[Dataset],
    teacher_model: str,
    teacher_responses: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    teacher_base_url: str = "",
    cache_uri: str = "",
    concurrency: int = 4,
    max_new_tokens: int = 0,
    prompt_uri: str = "",
    rubric_uri: str = "",
    prices_uri: str = "",
    catalog_uri: str = "",
    on_bad_rows: str = "quarantine",
    shard: int = -1,
):
    """Asks the teacher LLM for an answer to every prompt and records it with its tokens, cost and latency.

    Args:
        prompts: `prompt_id` and `prompt` (`prepared_prompts` from response_dataset, or the `response_eval` set,
            whose eval_id is the prompt_id); every prompt is redacted again here.
        teacher_model: The chat API's model name when teacher_base_url is set; else a local instruct model
            (builtin name, folder, gs://) served in the task over HTTP, one request at a time.
        teacher_base_url: Base URL (`.../v1`) of the OpenAI-compatible teacher API; the key comes from the
            TEACHER_API_KEY environment variable (a Kubernetes secret). Empty: a local teacher.
        cache_uri: Folder or gs:// prefix of the content-addressed answer cache; reruns and retries never pay
            twice for a prompt; the pipeline passes `<pipeline root>/teacher-cache/response`. Empty (or a scheme
            this library cannot write, such as minio://): a cache for this run only, with a warning.
        concurrency: Requests in flight to the teacher API (a local teacher takes one at a time).
        max_new_tokens: Answer length cap (part of the cache key); 0 keeps the prompt file's.
        prompt_uri: The retrieval-grounded prompt YAML; empty for the packaged, versioned one.
        rubric_uri: The answer rubric YAML; empty for the packaged, versioned one.
        prices_uri: Price table YAML (USD per 1M tokens per model); empty for the packaged one.
        catalog_uri: Catalog JSONL retrieved into each prompt; empty for the packaged sample.
        on_bad_rows: `quarantine` (default) or `fail`.
        shard: -1 (default): label the whole `prompts` table. >= 0: `prompts` is the folder response_shard_prompts
            wrote, and this task labels its shard `shard` (response_merge_labels puts the shards together).

    Returns:
        teacher_responses: The `teacher_responses` contract, one answer per prompt with the retrieved catalog
            records, tokens, cost, latency and cache key.
        quarantine: Rows refused, with reasons (malformed or repeated prompts, answers that failed after retries:
            a failed answer never fails the task; a misconfigured API, 401/403/404, does).
        metrics: Prompts labelled, cache hits, teacher calls, tokens and cost spent, the teacher's tokens per
            second, redacted personal data per kind.
    """
    from mangadistill.response.labeling import ResponseLabelingConfig
    from mangadistill.response.stages import run_response_teacher_labeling

    config = ResponseLabelingConfig(
        teacher_model=teacher_model, base_url=teacher_base_url, cache_uri=cache_uri, concurrency=concurrency,
        max_new_tokens=max_new_tokens, prompt_uri=prompt_uri, rubric_uri=rubric_uri, prices_uri=prices_uri,
        catalog_uri=catalog_uri,
    )
    summary = run_response_teacher_labeling(prompts.path, teacher_responses.path, quarantine.path, config,
                                            on_bad_rows=on_bad_rows, shard=shard)
    for name, value in summary.items():
        metrics.log_metric(name, value)
