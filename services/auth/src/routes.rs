//! `/api/v1/auth/*` (sign-in, refresh, sign-out, who am I) and `/api/v1/admin/*` (users,
//! API keys, the audit log; administrators only).

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, patch_with, post_with};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use keh_http::Problem;
use keh_http::docs::{self, Access, Describe as _};
use keh_http::json::ApiJson;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::principal::{Caller, Principal, Role, Scope};
use crate::service::{ApiKey, AuditEntry, AuthService, NewUser, TokenPair, User, UserChange};

/// The documented routes of sign-in and administration.
pub fn routes() -> ApiRouter<AuthService> {
    ApiRouter::new()
        .api_route(
            "/api/v1/auth/token",
            post_with(sign_in, |op| {
                op.named("signIn", "Auth", "Sign in: an access token and a refresh token")
                    .access(Access::Open)
                    .answer(200, docs::ok("Signed in", docs::schema::<TokenPair>()))
                    .errors(&[401, 422, 429])
            }),
        )
        .api_route(
            "/api/v1/auth/refresh",
            post_with(refresh, |op| {
                op.named(
                    "refreshToken",
                    "Auth",
                    "A new token pair for a refresh token (which is revoked)",
                )
                .access(Access::Open)
                .answer(200, docs::ok("Refreshed", docs::schema::<TokenPair>()))
                .errors(&[401, 422])
            }),
        )
        .api_route(
            "/api/v1/auth/sign-out",
            post_with(sign_out, |op| {
                op.named(
                    "signOut",
                    "Auth",
                    "End a session (its refresh tokens are revoked)",
                )
                .access(Access::Open)
                .answer(204, json!({"description": "Signed out"}))
                .errors(&[422])
            }),
        )
        .api_route(
            "/api/v1/auth/me",
            get_with(me, |op| {
                let caller = json!({"type": "object", "required": ["kind", "actor"], "properties": {"kind": {"type": "string", "enum": ["anonymous", "user", "api-key"]}, "actor": {"type": "string"}}});
                op.named("whoAmI", "Auth", "Who the credentials say the caller is")
                    .access(Access::Read)
                    .answer(200, docs::ok("The caller", caller))
            }),
        )
        .api_route(
            "/api/v1/auth/feed-ticket",
            post_with(feed_ticket, |op| {
                let ticket = json!({"type": "object", "required": ["ticket", "expires_in"], "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer", "minimum": 1}}});
                op.named(
                    "feedTicket",
                    "Auth",
                    "A one-minute ticket that opens the live feed (GET /api/v1/listing-events?ticket=…) and nothing else",
                )
                .access(Access::Required)
                .answer(200, docs::ok("The ticket", ticket))
            }),
        )
        .api_route(
            "/api/v1/admin/users",
            get_with(users, |op| {
                op.named("listUsers", "Admin", "Every user")
                    .access(Access::Required)
                    .answer(200, docs::ok("Users", docs::items(docs::schema::<User>())))
                    .errors(&[403])
            })
            .post_with(create_user, |op| {
                op.named("createUser", "Admin", "Create a user (audited)")
                    .access(Access::Required)
                    .answer(201, docs::ok("Created", docs::schema::<User>()))
                    .errors(&[403, 409, 422])
            }),
        )
        .api_route(
            "/api/v1/admin/users/{UserId}",
            patch_with(update_user, |op| {
                op.named(
                    "updateUser",
                    "Admin",
                    "Change a user's role, keys, password or disabled flag (audited)",
                )
                .access(Access::Required)
                .answer(200, docs::ok("Changed", docs::schema::<User>()))
                .errors(&[403, 404, 422])
            }),
        )
        .api_route(
            "/api/v1/admin/api-keys",
            get_with(api_keys, |op| {
                op.named(
                    "listApiKeys",
                    "Admin",
                    "Every API key (never the keys themselves)",
                )
                .access(Access::Required)
                .answer(200, docs::ok("API keys", docs::items(docs::schema::<ApiKey>())))
                .errors(&[403])
            })
            .post_with(create_api_key, |op| {
                let created = json!({"allOf": [docs::schema::<ApiKey>(), {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "note": {"type": "string"}}}]});
                op.named(
                    "createApiKey",
                    "Admin",
                    "Create an API key; the key is in this answer only (audited)",
                )
                .access(Access::Required)
                .answer(201, docs::ok("Created", created))
                .errors(&[403, 422])
            }),
        )
        .api_route(
            "/api/v1/admin/api-keys/{KeyId}",
            delete_with(revoke_api_key, |op| {
                op.named("revokeApiKey", "Admin", "Revoke an API key (audited)")
                    .access(Access::Required)
                    .answer(200, docs::ok("Revoked", docs::schema::<ApiKey>()))
                    .errors(&[403, 404])
            }),
        )
        .api_route(
            "/api/v1/admin/audit",
            get_with(audit, |op| {
                op.named("auditLog", "Admin", "Administrative actions, newest first")
                    .access(Access::Required)
                    .answer(200, docs::ok("Audit log", docs::items(docs::schema::<AuditEntry>())))
                    .errors(&[403])
            }),
        )
}

/// Sign-in and administration, serving `auth`.
pub fn router(auth: AuthService) -> Router {
    Router::from(routes().with_state(auth))
}

/// `/api/v1/admin/users/{UserId}`
#[derive(Deserialize, schemars::JsonSchema)]
struct UserPath {
    /// The user.
    #[serde(rename = "UserId")]
    #[schemars(with = "Uuid")]
    user_id: String,
}

/// `/api/v1/admin/api-keys/{KeyId}`
#[derive(Deserialize, schemars::JsonSchema)]
struct KeyPath {
    /// The API key.
    #[serde(rename = "KeyId")]
    #[schemars(with = "Uuid")]
    key_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[schemars(length(min = 1, max = 100))]
    pub username: String,
    #[schemars(length(min = 1, max = 1024))]
    pub password: String,
}

async fn sign_in(
    State(auth): State<AuthService>,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, Problem> {
    let pair = auth.sign_in(&body.username, &body.password).await?;
    Ok(Json(pair).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

async fn refresh(
    State(auth): State<AuthService>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, Problem> {
    Ok(Json(auth.refresh(&body.refresh_token).await?).into_response())
}

async fn sign_out(
    State(auth): State<AuthService>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, Problem> {
    auth.sign_out(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn me(caller: Caller) -> Response {
    let body = match &caller.principal {
        Principal::Anonymous => {
            json!({"kind": "anonymous", "actor": caller.actor(), "anonymous_read": caller.anonymous_read})
        }
        Principal::User {
            user_id,
            username,
            role,
            agent_key,
            office_key,
            ..
        } => json!({
            "kind": "user", "actor": caller.actor(), "user_id": user_id, "username": username,
            "role": role, "agent_key": agent_key, "office_key": office_key,
        }),
        Principal::ApiKey {
            key_id,
            name,
            scopes,
        } => json!({
            "kind": "api-key", "actor": caller.actor(), "key_id": key_id, "name": name, "scopes": scopes,
        }),
    };
    Json(body).into_response()
}

/// `POST /api/v1/auth/feed-ticket`: a one-minute credential that opens only the live feed
/// (`GET /api/v1/listing-events?ticket=…`), so that a browser's `EventSource`, which cannot
/// send headers, never puts an access token in a URL.
async fn feed_ticket(State(auth): State<AuthService>, caller: Caller) -> Result<Response, Problem> {
    if matches!(caller.principal, Principal::Anonymous) {
        return Err(crate::principal::unauthorized(
            "sign in first: a ticket carries a signed-in user's access to the feed",
        ));
    }
    let ticket = auth.feed_ticket(&caller.principal)?;
    Ok(Json(json!({
        "ticket": ticket,
        "expires_in": crate::service::FEED_TICKET_TTL.as_secs(),
    }))
    .into_response())
}

fn id(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request(
            "invalid-path-parameter",
            format!("the {what} id must be a UUID"),
        )
        .with_field("id", "invalid-value", "must be a UUID")
    })
}

fn user_of(caller: &Caller) -> Option<Uuid> {
    match &caller.principal {
        Principal::User { user_id, .. } => Some(*user_id),
        _ => None,
    }
}

async fn users(State(auth): State<AuthService>, caller: Caller) -> Result<Response, Problem> {
    caller.require_admin()?;
    Ok(Json(json!({"items": auth.users().await?})).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub username: String,
    #[schemars(length(min = 10, max = 1024))]
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub agent_key: Option<String>,
    #[serde(default)]
    pub office_key: Option<String>,
}

async fn create_user(
    State(auth): State<AuthService>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let user = auth
        .create_user(
            &caller.actor(),
            NewUser {
                username: body.username,
                password: body.password,
                role: body.role,
                agent_key: body.agent_key,
                office_key: body.office_key,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// `Some(None)` for an explicit null (clear), as in the listing PATCH.
fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "double_option")]
    pub agent_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub office_key: Option<Option<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    #[schemars(length(min = 10, max = 1024))]
    pub password: Option<String>,
}

async fn update_user(
    State(auth): State<AuthService>,
    caller: Caller,
    Path(path): Path<UserPath>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let user_id = id(&path.user_id, "user")?;
    let change = UserChange {
        role: body.role,
        agent_key: body.agent_key,
        office_key: body.office_key,
        disabled: body.disabled,
        password: body.password,
    };
    Ok(Json(auth.update_user(&caller.actor(), user_id, change).await?).into_response())
}

async fn api_keys(State(auth): State<AuthService>, caller: Caller) -> Result<Response, Problem> {
    caller.require_admin()?;
    Ok(Json(json!({"items": auth.api_keys().await?})).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub scopes: Vec<Scope>,
}

async fn create_api_key(
    State(auth): State<AuthService>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let (key, secret) = auth
        .create_api_key(&caller.actor(), user_of(&caller), &body.name, &body.scopes)
        .await?;
    let mut value = json!(key);
    value["key"] = json!(secret);
    value["note"] = json!("the key is shown only now: store it safely");
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn revoke_api_key(
    State(auth): State<AuthService>,
    caller: Caller,
    Path(path): Path<KeyPath>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let key_id = id(&path.key_id, "API key")?;
    Ok(Json(auth.revoke_api_key(&caller.actor(), key_id).await?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

async fn audit(
    State(auth): State<AuthService>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, Problem> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query-parameter",
            "limit must be from 1 to 1000",
        )
        .with_field("limit", "out-of-range", "must be from 1 to 1000"));
    }
    Ok(Json(json!({"items": auth.audit_log(limit).await?})).into_response())
}
