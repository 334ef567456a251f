//! The Listing aggregate: the only place that decides whether a command is allowed.
//!
//! - [`lifecycle`]: the `StandardStatus` transition table and the `ChangeType` of each move;
//! - [`command`]: typed commands (already parsed: a command value is well-formed);
//! - [`aggregate`]: [`Listing`], its state and the rules (`handle` decides, `apply` mutates);
//! - [`error`]: rule violations naming the field and the rule.
//!
//! No I/O here: the aggregate is pure, so every rule is unit-tested with given/when/then.

pub mod aggregate;
pub mod command;
pub mod error;
pub mod lifecycle;

pub use aggregate::{Listing, ListingState, Media, OpenHouse, OpenHouseStatus};
pub use command::ListingCommand;
pub use error::{ErrorKind, ListingError};
