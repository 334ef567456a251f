//! The caller of a request and what it may do.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use keh_http::Problem;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, roles and API keys.
    Admin,
    /// Commands on their own listings (or their office's, if configured); reads.
    Agent,
    /// Reads.
    Viewer,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Admin, Self::Agent, Self::Viewer]
            .into_iter()
            .find(|r| r.as_str() == value)
    }
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read listings, market data and the live feed (subscribers, analysts' tools).
    Read,
    /// Send commands on any listing (integrations).
    Write,
    /// Send commands on any listing, as an importer.
    Import,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Import => "import",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Read, Self::Write, Self::Import]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Principal {
    #[default]
    Anonymous,
    User {
        user_id: Uuid,
        username: String,
        role: Role,
        agent_key: Option<String>,
        office_key: Option<String>,
        /// The session (refresh-token family) the token belongs to.
        session: Uuid,
        /// The user's token epoch the token was issued at.
        epoch: i64,
    },
    ApiKey {
        key_id: Uuid,
        name: String,
        scopes: Vec<Scope>,
    },
}

/// The caller of a request with the policy it is judged by; the auth middleware puts it in
/// the request's extensions, handlers take it as an extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub anonymous_read: bool,
    pub office_access: bool,
    /// The client's address (`ip:…`, an IPv6 /64), for limits on anonymous callers.
    pub address: String,
}

impl Default for Caller {
    /// Without the middleware (a role mounted alone in a test): anonymous, reads allowed.
    fn default() -> Self {
        Self {
            principal: Principal::Anonymous,
            anonymous_read: true,
            office_access: false,
            address: "ip:unknown".to_owned(),
        }
    }
}

/// 401: no or bad credentials.
pub fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
}

/// 403: known caller, not allowed.
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
}

/// The listings a caller's commands may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandScope {
    /// Any listing (administrators, integrations).
    Any,
    /// Listings whose `ListAgentKey` is this agent's (or whose `ListOfficeKey` is their
    /// office's, when office access is on).
    Agent {
        agent_key: String,
        office_key: Option<String>,
    },
}

impl Caller {
    /// The actor recorded in the events this caller causes.
    pub fn actor(&self) -> String {
        match &self.principal {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::User { username, .. } => format!("user:{username}"),
            Principal::ApiKey { key_id, name, .. } => format!("api-key:{name}:{key_id}"),
        }
    }

    /// What limits count per caller: a user or an API key by identity, anyone else by
    /// address.
    pub fn limit_key(&self) -> String {
        match &self.principal {
            Principal::Anonymous => self.address.clone(),
            Principal::User { user_id, .. } => format!("user:{user_id}"),
            Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }

    /// A stable identifier of the caller that no name can imitate (idempotency scopes).
    pub fn scope_id(&self) -> String {
        match &self.principal {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::User { user_id, .. } => format!("user/{user_id}"),
            Principal::ApiKey { key_id, .. } => format!("key/{key_id}"),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self.principal,
            Principal::User {
                role: Role::Admin,
                ..
            }
        )
    }

    /// Reading public listing and market data.
    pub fn require_read(&self) -> Result<(), Problem> {
        match &self.principal {
            Principal::Anonymous if self.anonymous_read => Ok(()),
            Principal::Anonymous => Err(unauthorized(
                "sign in or send an API key to read (anonymous reading is off)",
            )),
            Principal::User { .. } => Ok(()),
            Principal::ApiKey { scopes, .. } if scopes.contains(&Scope::Read) => Ok(()),
            Principal::ApiKey { .. } => Err(forbidden("this API key has no read scope")),
        }
    }

    /// A signed-in user or an API key (requests that create something, such as reports).
    pub fn require_identified(&self) -> Result<(), Problem> {
        match &self.principal {
            Principal::Anonymous => Err(unauthorized("sign in or send an API key")),
            _ => self.require_read(),
        }
    }

    /// Sending commands: agents, administrators, and API keys with the write or import
    /// scope. Returns the listings the caller may touch.
    pub fn require_write(&self) -> Result<CommandScope, Problem> {
        match &self.principal {
            Principal::Anonymous => Err(unauthorized(
                "sign in (POST /api/v1/auth/token) or send an API key to change listings",
            )),
            Principal::User {
                role: Role::Admin, ..
            } => Ok(CommandScope::Any),
            Principal::User {
                role: Role::Agent,
                agent_key: Some(agent_key),
                office_key,
                ..
            } => Ok(CommandScope::Agent {
                agent_key: agent_key.clone(),
                office_key: office_key.clone().filter(|_| self.office_access),
            }),
            Principal::User { .. } => Err(forbidden(
                "viewers cannot change listings; an agent or an administrator can",
            )),
            Principal::ApiKey { scopes, .. }
                if scopes.contains(&Scope::Write) || scopes.contains(&Scope::Import) =>
            {
                Ok(CommandScope::Any)
            }
            Principal::ApiKey { .. } => Err(forbidden(
                "this API key may not change listings (it needs the write or import scope)",
            )),
        }
    }

    /// Administration (users, roles, API keys, the audit log).
    pub fn require_admin(&self) -> Result<(), Problem> {
        match &self.principal {
            Principal::Anonymous => Err(unauthorized("sign in as an administrator")),
            _ if self.is_admin() => Ok(()),
            _ => Err(forbidden("only administrators may do this")),
        }
    }

    /// Whether the caller may see the private fields of a listing with these keys: its
    /// agent (or their office, when office access is on) and administrators.
    pub fn may_see_private(
        &self,
        list_agent_key: Option<&str>,
        list_office_key: Option<&str>,
    ) -> bool {
        match &self.principal {
            Principal::User {
                role: Role::Admin, ..
            } => true,
            Principal::User {
                role: Role::Agent,
                agent_key,
                office_key,
                ..
            } => {
                (agent_key.is_some() && agent_key.as_deref() == list_agent_key)
                    || (self.office_access
                        && office_key.is_some()
                        && office_key.as_deref() == list_office_key)
            }
            _ => false,
        }
    }
}

/// Who may call an operation is the route's to say (`keh_http::docs::Describe::access`):
/// every operation reads the caller, and decides itself what it requires.
impl aide::OperationInput for Caller {}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_default())
    }
}
