//! Connection limits for streaming clients live in the bus core ([`switchyard::limits`]), shared
//! with gRPC `Subscribe`; here they become HTTP answers.

pub use switchyard::limits::{Caps, Kind, LimitError, Limits, Slot};

use crate::http::error::ApiError;

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        ApiError::too_many(e.to_string(), 5)
    }
}
