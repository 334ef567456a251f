//! The one path every command takes: idempotent replay, the `ListingId` reservation
//! check, execution detached from the client's connection, and remembering the answer for
//! a retry with the same `Idempotency-Key`.

use super::*;

/// The one path every command takes: idempotent replay, `ListingId` reservation check,
/// execution (detached from the client connection), and the response.
pub(crate) async fn submit(
    api: &CommandApi,
    key: &ListingKey,
    command: ListingCommand,
    ctx: CommandContext,
    listing_id: Option<ShortText>,
    success: StatusCode,
) -> Result<Response, Problem> {
    if let Some(response) = replay_if_known(api, &ctx).await? {
        return Ok(response);
    }
    if let Some(listing_id) = &listing_id {
        check_listing_id_free(api, listing_id, key).await?;
    }
    let metadata = ctx.metadata(success.as_u16());
    let expected = match &ctx.if_match {
        IfMatch::Any => None,
        IfMatch::Versions(versions) => Some(versions.clone()),
    };
    let store = Arc::clone(&api.store);
    let listing_key = key.as_str().to_owned();
    let access = ctx.access.clone();
    // Detached: a client that disconnects mid-request cancels its wait, never the append
    // (no half-done effect, no pooled connection left idle in a transaction).
    let outcome = tokio::spawn(
        async move {
            store
                .execute(
                    &listing_key,
                    command,
                    &metadata,
                    expected.as_deref(),
                    &access,
                )
                .await
        }
        // The detached task stays in the request's span, so the append joins its trace.
        .in_current_span(),
    )
    .await
    .map_err(|error| {
        tracing::error!(%error, "command task failed");
        Problem::internal()
    })?;
    match outcome {
        Ok(executed) => {
            let status = if executed.appended == 0 && success == StatusCode::CREATED {
                StatusCode::OK
            } else {
                success
            };
            if executed.appended == 0 {
                // An earlier attempt of this very request (same Idempotency-Key) may have
                // committed after this one's replay check: then this decision was made on
                // its result, and the first answer is the one to give.
                if let Some(response) = replay_if_known(api, &ctx).await? {
                    return Ok(response);
                }
                // Nothing was appended, so the trigger recorded nothing: remember the answer.
                remember(api, &ctx, key, status, executed.listing.version(), None).await;
            }
            Ok(listing_response(
                executed.listing,
                status,
                None,
                &ctx.caller,
            ))
        }
        Err(ExecuteError::Conflict) => {
            // Maybe the same idempotent request won concurrently, or the ListingId was
            // taken meanwhile; otherwise another write to this listing came first.
            if let Some(response) = replay_if_known(api, &ctx).await? {
                return Ok(response);
            }
            if let Some(listing_id) = &listing_id {
                check_listing_id_free(api, listing_id, key).await?;
            }
            let current = api.store.load(key.as_str()).await.map(|l| l.version()).ok();
            let mut problem = Problem::new(
                StatusCode::CONFLICT,
                "concurrent-modification",
                "Conflict",
                "another change to this listing was committed first; reload it and retry",
            );
            problem.current_version = current;
            Err(problem)
        }
        // Decisions (a rule refused it, a stale If-Match) are answers a retry must get again;
        // passing failures (unavailable, internal) are not remembered.
        Err(error @ (ExecuteError::Rule(_) | ExecuteError::VersionMismatch { .. })) => {
            // As above: refused because an earlier attempt of this request committed
            // meanwhile (a client retry racing its own dropped attempt) → the first answer.
            if let Some(response) = replay_if_known(api, &ctx).await? {
                return Ok(response);
            }
            let problem = execute_problem(error, key);
            let body = serde_json::to_value(&problem).ok();
            remember(api, &ctx, key, problem.status, 0, body).await;
            Err(problem)
        }
        Err(error) => Err(execute_problem(error, key)),
    }
}

/// With an `Idempotency-Key` already recorded: the first answer again (same status, the
/// listing as it was right after the first request), or 422 if the key was used for
/// another request.
async fn replay_if_known(
    api: &CommandApi,
    ctx: &CommandContext,
) -> Result<Option<Response>, Problem> {
    let Some(idempotency) = &ctx.idempotency else {
        return Ok(None);
    };
    let record = api
        .store
        .idempotency_record(&idempotency.scope)
        .await
        .map_err(execute_problem_plain)?;
    let Some(record) = record else {
        return Ok(None);
    };
    if record.request_hash != ctx.digest {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was already used for a different request",
        )
        .with_field(
            "Idempotency-Key",
            "reused",
            "use a new key for a new request",
        ));
    }
    let status = u16::try_from(record.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(problem) = record.problem {
        let mut response = (status, problem.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(keh_http::problem::PROBLEM_JSON),
        );
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Some(response));
    }
    let listing = api
        .store
        .state_at(&record.aggregate_id, record.last_sequence)
        .await
        .map_err(execute_problem_plain)?;
    Ok(Some(listing_response(
        listing,
        status,
        Some(HeaderValue::from_static("true")),
        &ctx.caller,
    )))
}

/// Remembers the answer of a command that appended nothing, under its Idempotency-Key (if
/// any). A failure to remember is logged: the answer itself is still right.
async fn remember(
    api: &CommandApi,
    ctx: &CommandContext,
    key: &ListingKey,
    status: StatusCode,
    version: u64,
    problem: Option<serde_json::Value>,
) {
    let Some(idempotency) = &ctx.idempotency else {
        return;
    };
    let Ok(version) = i64::try_from(version) else {
        tracing::warn!(
            version,
            "a listing version beyond BIGINT; the answer is not remembered"
        );
        return;
    };
    let record = keh_store::IdempotencyRecord {
        aggregate_id: key.as_str().to_owned(),
        request_hash: ctx.digest.clone(),
        response_status: i32::from(status.as_u16()),
        last_sequence: version,
        problem,
    };
    if let Err(error) = api.store.record_answer(&idempotency.scope, &record).await {
        tracing::warn!(%error, "could not remember an idempotent answer");
    }
}

async fn check_listing_id_free(
    api: &CommandApi,
    listing_id: &ShortText,
    key: &ListingKey,
) -> Result<(), Problem> {
    let owner = api
        .store
        .listing_id_owner(listing_id.as_str())
        .await
        .map_err(|e| execute_problem(e, key))?;
    match owner {
        Some(owner) if owner != key.as_str() => Err(Problem::new(
            StatusCode::CONFLICT,
            "listing-id-taken",
            "Conflict",
            format!("ListingId {listing_id} belongs to another listing"),
        )
        .with_field(
            "ListingId",
            "unique",
            "ListingId must be unique among listings",
        )),
        _ => Ok(()),
    }
}
