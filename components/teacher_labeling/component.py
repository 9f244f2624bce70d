"""KFP component: teacher labeling (intent: the ensemble members vote on every message; reranker: the
cross-encoder teacher scores every (query, candidate) pair; response: the teacher LLM answers every prompt)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def teacher_labeling(
    teacher_model: str,
    member_votes: Output[Dataset],
    teacher_scores: Output[Dataset],
    teacher_responses: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    messages: Input[Dataset] = None,
    candidates: Input[Dataset] = None,
    queries: Input[Dataset] = None,
    prompts: Input[Dataset] = None,
    task: str = "intent",
    rules_uri: str = "",
    adjudicator: str = "local",
    adjudicator_model: str = "smollm2-135m",
    adjudicator_base_url: str = "",
    ambiguity_margin: float = 0.2,
    ambiguity_entropy: float = 0.6,
    max_adjudications: int = 1000,
    top_k: int = 0,
    batch_size: int = 32,
    max_length: int = 128,
    on_bad_rows: str = "quarantine",
    teacher_base_url: str = "",
    cache_uri: str = "",
    concurrency: int = 4,
    max_new_tokens: int = 0,
    prompt_uri: str = "",
    rubric_uri: str = "",
    prices_uri: str = "",
    catalog_uri: str = "",
):
    """Runs the teacher over the unlabelled data and records what it says, per row.

    Args:
        teacher_model: intent: the fine-tuned classifier; reranker: the cross-encoder (one logit). A local
            folder, a gs:// prefix or a builtin name. response: the chat API's model name when teacher_base_url
            is set; else a local instruct model (builtin name, folder, gs://) served in-process over HTTP.
        messages: intent only (required there): Parquet/JSONL with `message_id` and `text` (the `messages`
            contract; extra columns ignored).
        candidates: reranker only (required there): the `rerank_candidates` contract, one row per (query, sku).
        queries: reranker only, optional: the `rerank_queries` contract; queries with no candidate row are
            quarantined ("query has no candidates").
        prompts: response only (required there): `prompt_id` and `prompt` (`prepared_prompts` from
            response_dataset, or the `response_eval` set, whose eval_id is the prompt_id); redacted again here.
        task: `intent`, `reranker` or `response`.
        rules_uri: intent only: escalation rules YAML; empty for the packaged, versioned rules.
        adjudicator: intent only: `local` (a local instruct model), `openai` (an OpenAI-compatible chat API; the
            key comes from the TEACHER_API_KEY environment variable, set from a Kubernetes secret) or `none`.
        adjudicator_model: intent only: builtin name or folder for `local`; the API's model name for `openai`.
        adjudicator_base_url: intent only: base URL of the chat API (`.../v1`) for `openai`.
        ambiguity_margin: intent only: rows whose classifier top-2 margin is below this go to the adjudicator.
        ambiguity_entropy: intent only: rows whose normalised classifier entropy is above this go to the
            adjudicator.
        max_adjudications: intent only: cap on adjudicator calls per run (the least certain rows first).
        top_k: reranker only: score each query's first top_k candidates in retrieval order; 0 scores all.
        batch_size: reranker only: pairs per forward pass (pairs are sorted by length to cut padding).
        max_length: reranker only: token limit of query + candidate text.
        on_bad_rows: `quarantine` (default) or `fail`.
        teacher_base_url: response only: base URL (`.../v1`) of the OpenAI-compatible teacher API; the key comes
            from the TEACHER_API_KEY environment variable (a Kubernetes secret). Empty: a local teacher.
        cache_uri: response only: folder or gs:// prefix of the content-addressed answer cache; reruns and
            retries never pay twice for a prompt. Empty: a cache for this run only.
        concurrency: response only: requests in flight to the teacher API (a local teacher takes one at a time).
        max_new_tokens: response only: answer length cap (part of the cache key); 0 keeps the prompt file's.
        prompt_uri: response only: the retrieval-grounded prompt YAML; empty for the packaged, versioned one.
        rubric_uri: response only: the answer rubric YAML; empty for the packaged, versioned one.
        prices_uri: response only: price table YAML (USD per 1M tokens per model); empty for the packaged one.
        catalog_uri: response only: catalog JSONL retrieved into each prompt; empty for the packaged sample.

    Returns:
        member_votes: intent: the `member_votes` contract, each member's output and who voted, per message
            (reranker, response: an empty table).
        teacher_scores: reranker: the `rerank_teacher_scores` contract, the seed's {query, candidate,
            teacher_score} with ids, the text scored and the relevance where known; teacher_score =
            sigmoid(logit) in [0, 1] (intent, response: an empty table).
        teacher_responses: response: the `teacher_responses` contract, one answer per prompt with the retrieved
            catalog records, tokens, cost, latency and cache key (intent, reranker: an empty table).
        quarantine: Rows refused, with reasons (malformed, duplicate, NaN or out-of-range teacher scores,
            queries without candidates).
        metrics: Row counts, quarantine counts; intent: ambiguous and adjudicated rows, rule hits; reranker:
            pairs scored, pairs per second.
    """
    from mangadistill.intent.labeling import LabelingConfig
    from mangadistill.intent.stages import teacher_labeling_stage

    summary = teacher_labeling_stage(
        task, quarantine.path, teacher_model,
        messages_uri=messages.path if messages else "", member_votes_uri=member_votes.path,
        candidates_uri=candidates.path if candidates else "", queries_uri=queries.path if queries else "",
        teacher_scores_uri=teacher_scores.path, prompts_uri=prompts.path if prompts else "",
        teacher_responses_uri=teacher_responses.path,
        intent_config=LabelingConfig(
            teacher_model=teacher_model, rules_uri=rules_uri, adjudicator=adjudicator,
            adjudicator_model=adjudicator_model, adjudicator_base_url=adjudicator_base_url,
            ambiguity_margin=ambiguity_margin, ambiguity_entropy=ambiguity_entropy,
            max_adjudications=max_adjudications,
        ),
        top_k=top_k, batch_size=batch_size, max_length=max_length, on_bad_rows=on_bad_rows,
        response_options=dict(
            base_url=teacher_base_url, cache_uri=cache_uri, concurrency=concurrency, max_new_tokens=max_new_tokens,
            prompt_uri=prompt_uri, rubric_uri=rubric_uri, prices_uri=prices_uri, catalog_uri=catalog_uri,
        ),
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
