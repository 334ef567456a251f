//! Who sees what: private fields for a listing's agent and administrators only, no unsafe
//! media URL for anyone, and Delete and Incomplete listings answered as if they did not
//! exist to everyone else.

use keh_auth::Caller;
use keh_events::reso::StandardStatus;
use keh_listing::ListingState;
use keh_resources::{Audience, ListingResource};
use sqlx::QueryBuilder;

/// Whether `caller` may see the private fields of the listing whose state is `state`.
pub(crate) fn may_see_private(caller: &Caller, state: &ListingState) -> bool {
    audience(caller, state) == Audience::Private
}

fn audience(caller: &Caller, state: &ListingState) -> Audience {
    Audience::of(state, |agent, office| caller.may_see_private(agent, office))
}

/// The listing as `caller` may see it: private fields for its agent and administrators
/// only, and, for everyone, no media URL that is not safe to follow.
pub(crate) fn visible(state: ListingState, caller: &Caller) -> ListingResource {
    let audience = audience(caller, &state);
    ListingResource::new(state, audience)
}

/// Statuses only a listing's agent and administrators may see: a listing being prepared,
/// and one taken off the record.
pub(crate) const HIDDEN_STATUSES: [StandardStatus; 2] =
    [StandardStatus::Delete, StandardStatus::Incomplete];

/// [`HIDDEN_STATUSES`] as a query parameter.
pub(crate) fn hidden_statuses() -> Vec<String> {
    HIDDEN_STATUSES.map(|s| s.as_str().to_owned()).to_vec()
}

/// Whether the listing whose state is `state` is hidden from `caller` (answered as if it
/// did not exist).
pub(crate) fn hidden_from(caller: &Caller, state: &ListingState) -> bool {
    HIDDEN_STATUSES.contains(&state.standard_status) && !may_see_private(caller, state)
}

/// Appends the condition that leaves out listings hidden from `caller`.
pub(crate) fn push_visibility(query: &mut QueryBuilder<'_, sqlx::Postgres>, caller: &Caller) {
    if caller.is_admin() {
        return;
    }
    query
        .push(" AND (standard_status <> ALL(")
        .push_bind(hidden_statuses())
        .push(")");
    if let keh_auth::Principal::User {
        role: keh_auth::Role::Agent,
        agent_key,
        office_key,
        ..
    } = &caller.principal
    {
        if let Some(agent_key) = agent_key {
            query
                .push(" OR state->>'ListAgentKey' = ")
                .push_bind(agent_key.clone());
        }
        if let (true, Some(office_key)) = (caller.office_access, office_key) {
            query
                .push(" OR state->>'ListOfficeKey' = ")
                .push_bind(office_key.clone());
        }
    }
    query.push(")");
}
