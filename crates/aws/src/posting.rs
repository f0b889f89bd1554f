//! One post to a connection through the Management API, tried again when API
//! Gateway throttles it: the leaf that `delivery` (a send) and `recovery` (a
//! resume's replay) both post with, so neither imports the other.

use crate::domain::ConnectionId;
use crate::ports::{ConnectionGateway, GatewayError};

/// How many times a post that API Gateway throttled (429) is tried in all.
const POST_ATTEMPTS: u32 = 4;

/// Posts `data`, trying again after a pause when the connection's posts are
/// throttled (API Gateway's 429; `serve`'s queue of 32 frames per connection).
pub async fn post_with_retries(
    gateway: &dyn ConnectionGateway,
    connection_id: &ConnectionId,
    data: &[u8],
) -> Result<(), GatewayError> {
    let mut attempt = 1;
    loop {
        match gateway.post(connection_id, data).await {
            Err(GatewayError::Throttled(_)) if attempt < POST_ATTEMPTS => {
                crate::backoff::pause(attempt + 2).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
