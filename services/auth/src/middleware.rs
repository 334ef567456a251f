//! Resolves the caller of every request from its credentials: `Authorization: Bearer
//! <access token or API key>`, or `X-API-Key: <API key>`. No credentials: anonymous. Bad
//! credentials: 401 at once, whatever the route.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keh_http::Problem;

use crate::principal::{Caller, Principal, unauthorized};
use crate::service::AuthService;

/// The credential a request carries, if any.
fn credential(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not valid"))?;
        let (scheme, token) = text
            .split_once(' ')
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(unauthorized("send Authorization: Bearer <token>"));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(value) = headers.get("x-api-key") {
        let text = value
            .to_str()
            .map_err(|_| unauthorized("the X-API-Key header is not valid"))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(None)
}

/// Browsers' `EventSource` cannot send headers: the live feed takes a feed ticket as
/// `?ticket=` (`POST /api/v1/auth/feed-ticket`), and, deprecated because it puts a bearer
/// credential in URLs and logs, an access token as `?access_token=`.
const QUERY_TOKEN_PATH: &str = "/api/v1/listing-events";

/// A credential in the feed's query string.
enum QueryCredential {
    Ticket(String),
    AccessToken(String),
}

fn query_credential(request: &Request) -> Option<QueryCredential> {
    if request.uri().path() != QUERY_TOKEN_PATH {
        return None;
    }
    let query = request.uri().query()?;
    let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()?;
    pairs
        .into_iter()
        .find_map(|(name, value)| match name.as_str() {
            "ticket" => Some(QueryCredential::Ticket(value)),
            "access_token" => Some(QueryCredential::AccessToken(value)),
            _ => None,
        })
}

/// The middleware (`axum::middleware::from_fn_with_state(auth, resolve)`).
pub async fn resolve(
    State(auth): State<AuthService>,
    mut request: Request,
    next: Next,
) -> Response {
    let authenticated = match credential(request.headers()) {
        Ok(Some(credential)) => auth.authenticate(&credential).await.map_err(Problem::from),
        Ok(None) => match query_credential(&request) {
            None => Ok(Principal::Anonymous),
            Some(QueryCredential::Ticket(ticket)) => auth
                .authenticate_ticket(&ticket)
                .await
                .map_err(Problem::from),
            Some(QueryCredential::AccessToken(token)) => {
                tracing::debug!("live feed opened with ?access_token= (deprecated: use ?ticket=)");
                auth.authenticate(&token).await.map_err(Problem::from)
            }
        },
        Err(problem) => Err(problem),
    };
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(problem) => return with_challenge(problem.into_response()),
    };
    let settings = auth.settings();
    let address = crate::ratelimit::client_address(&request, &settings.trusted_proxies);
    request.extensions_mut().insert(Caller {
        principal,
        anonymous_read: settings.anonymous_read,
        office_access: settings.office_access,
        address,
    });
    with_challenge(next.run(request).await)
}

/// Every 401 says how to authenticate (RFC 9110 §11.6.1).
fn with_challenge(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"kubeestatehub\""),
        );
    }
    response
}
