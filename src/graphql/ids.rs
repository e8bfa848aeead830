//! Ids as the API shows them: a row's UUID given out as an `ID` string, and read back from
//! arguments with the argument's name in the error.

use async_graphql::ID;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// The one spelling of an id the API gives out; [`parse_id`] reads it back.
pub fn to_id(id: Uuid) -> ID {
    ID(id.to_string())
}

/// An id argument; BAD_USER_INPUT naming `field` when it is not one of ours.
pub fn parse_id(id: &ID, field: &'static str) -> AppResult<Uuid> {
    id.parse()
        .map_err(|_| AppError::bad_input(field, format!("`{field}` is not a valid id")))
}

/// A list of id arguments, all valid or an error for the first that is not.
pub fn parse_ids(ids: &[ID], field: &'static str) -> AppResult<Vec<Uuid>> {
    ids.iter().map(|id| parse_id(id, field)).collect()
}
