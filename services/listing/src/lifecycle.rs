//! The `StandardStatus` lifecycle (docs/api.md, "Lifecycle").

use keh_events::reso::{ChangeType, StandardStatus};

use StandardStatus as S;

/// Every status a listing may move to from `from`. Terminal statuses allow nothing.
pub const fn allowed_targets(from: StandardStatus) -> &'static [StandardStatus] {
    match from {
        S::Incomplete => &[S::ComingSoon, S::Active, S::Delete],
        S::ComingSoon => &[S::Active, S::Withdrawn, S::Hold, S::Canceled, S::Expired],
        S::Active => &[
            S::ActiveUnderContract,
            S::Pending,
            S::Withdrawn,
            S::Hold,
            S::Canceled,
            S::Expired,
        ],
        S::ActiveUnderContract => &[S::Active, S::Pending, S::Closed, S::Withdrawn, S::Canceled],
        S::Pending => &[S::Active, S::Closed, S::Canceled],
        S::Hold => &[S::Active, S::Withdrawn, S::Canceled, S::Expired],
        S::Withdrawn => &[S::Active, S::Canceled, S::Expired],
        S::Expired => &[S::Active, S::Canceled],
        S::Closed | S::Canceled | S::Delete => &[],
    }
}

/// Whether `from → to` is allowed.
pub fn is_allowed(from: StandardStatus, to: StandardStatus) -> bool {
    allowed_targets(from).contains(&to)
}

/// Statuses a new listing may start in.
pub const INITIAL: &[StandardStatus] = &[S::Incomplete, S::ComingSoon, S::Active];

/// The RESO `ChangeType` of an allowed transition.
pub const fn change_type(from: StandardStatus, to: StandardStatus) -> ChangeType {
    match to {
        S::Active => match from {
            S::Incomplete | S::ComingSoon => ChangeType::NewListing,
            _ => ChangeType::BackOnMarket,
        },
        S::ActiveUnderContract => ChangeType::ActiveUnderContract,
        S::Pending => ChangeType::Pending,
        S::Closed => ChangeType::Closed,
        S::Withdrawn => ChangeType::Withdrawn,
        S::Expired => ChangeType::Expired,
        S::Canceled => ChangeType::Canceled,
        S::Hold => ChangeType::Hold,
        S::ComingSoon => ChangeType::ComingSoon,
        S::Delete => ChangeType::Deleted,
        S::Incomplete => ChangeType::NewListing,
    }
}

/// Price changes are refused in terminal statuses and in Expired.
pub const fn allows_price_change(status: StandardStatus) -> bool {
    !status.is_terminal() && !matches!(status, S::Expired)
}

/// Open houses can be scheduled while the listing is marketed.
pub const fn allows_open_house(status: StandardStatus) -> bool {
    matches!(status, S::ComingSoon | S::Active | S::ActiveUnderContract)
}

/// Whether entering `to` takes the listing off the market (sets `OffMarketDate`).
pub const fn leaves_market(to: StandardStatus) -> bool {
    matches!(to, S::Withdrawn | S::Expired | S::Canceled | S::Hold)
}
