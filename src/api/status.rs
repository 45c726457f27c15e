//! Health and counts: `/status`, `/stats`, and `/metrics` (Prometheus text, outside the
//! OpenAPI document).

use std::sync::Arc;

use poem::web::Data;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::security::GET_STATS;
use super::{ApiError, ApiTags, Caller};
use crate::service::AppState;

pub struct StatusApi;

/// The service is up.
#[derive(Object)]
pub struct StatusBody {
    /// Always `OK`.
    pub status: String,
}

/// User statistics.
#[derive(Object)]
pub struct StatsBody {
    /// How many user accounts exist.
    pub users: u64,
}

#[derive(ApiResponse)]
pub enum StatsResponse {
    /// The counts.
    #[oai(status = 200)]
    Ok(Json<StatsBody>),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Status")]
impl StatusApi {
    /// Service status
    ///
    /// Answers `{"status": "OK"}` whenever the service is up. Needs no token.
    #[oai(path = "/status", method = "get", operation_id = "getStatus")]
    async fn status(&self) -> Json<StatusBody> {
        Json(StatusBody {
            status: "OK".into(),
        })
    }

    /// Count users
    ///
    /// The number of user accounts. Admins (with the `users:read` scope) only.
    #[oai(path = "/stats", method = "get", operation_id = "getStats")]
    async fn stats(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
    ) -> Result<StatsResponse, ApiError> {
        caller.authorize(GET_STATS, None)?;
        let users = state.store.count_users().await? as u64;
        Ok(StatsResponse::Ok(Json(StatsBody { users })))
    }
}

/// The service's counters for Prometheus.
#[poem::handler]
pub fn metrics(state: Data<&Arc<AppState>>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(
            state
                .metrics
                .render(state.passwords.queue_depth(), state.store.cache_live()),
        )
}
