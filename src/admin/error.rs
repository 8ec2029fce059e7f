//! Why an admin request was refused or failed, each reason with its HTTP status and the
//! JSON error code clients (the CLI, the page) branch on.

use http::{Method, StatusCode};
use uuid::Uuid;

use super::handlers::MAX_LIMIT;

use crate::config::ConfigError;
use crate::http_server::response::{error, JsonResponse};
use crate::queue::StoreError;

/// What an endpoint answers: its JSON, or the error that becomes one.
pub(super) type Answer = Result<JsonResponse, AdminError>;

/// Why an admin request was refused or failed; each maps to a status and an error code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The path segment is not a UUID.
    #[error("{0:?} is not a {1} id (a UUID)")]
    InvalidId(String, &'static str),
    /// `limit=` is not a number.
    #[error("limit must be a whole number, found {0:?}")]
    InvalidLimit(String),
    /// `limit=` is above [`MAX_LIMIT`].
    #[error("limit must be at most {MAX_LIMIT}, found {0}; page with destination filters, or use the retry and drop actions for bulk work")]
    LimitTooLarge(String),
    /// A request body is not what the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// A query parameter is not what the endpoint takes.
    #[error("{0}")]
    InvalidQuery(String),
    /// A replay could not be started, found or cancelled.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// No such dead letter.
    #[error("no dead letter {0} (retried, dropped or purged?)")]
    NoDeadLetter(Uuid),
    /// No such event.
    #[error("no event {0} (never accepted, or purged after server.retention)")]
    NoEvent(Uuid),
    /// No event has this id, ours or Mindstamp's.
    #[error("no event with the event id or Mindstamp id {0:?} (Mindstamp ids are known for events accepted since the daemon started, and for dead letters; events are purged after server.retention)")]
    NoEventFor(String),
    /// Retrying to a destination the config no longer has would only dead-letter again.
    #[error("destination {0:?} is not in the config; add it back (and reload) before retrying")]
    UnknownDestination(String),
    /// Hold or release of a destination the config does not have.
    #[error("no destination {0:?} in the config")]
    NoSuchDestination(String),
    /// `POST /reload` found errors in the file.
    #[error("the config was not reloaded; the previous rules stay in force:\n{0}")]
    InvalidConfig(ConfigError),
    /// Known path, wrong method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The path.
        path: String,
    },
    /// Unknown path.
    #[error("no admin endpoint at {0}; see the README (Operating it)")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something else failed (a task panicked, metrics could not render).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The JSON error answer.
    pub fn into_response(self) -> JsonResponse {
        let (status, code) = match &self {
            AdminError::InvalidId(..) => (StatusCode::BAD_REQUEST, "invalid_id"),
            AdminError::InvalidLimit(_) | AdminError::LimitTooLarge(_) => {
                (StatusCode::BAD_REQUEST, "invalid_limit")
            }
            AdminError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            AdminError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            AdminError::Replay(e) => replay_error(e),
            AdminError::NoDeadLetter(_)
            | AdminError::NoEvent(_)
            | AdminError::NoEventFor(_)
            | AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::NoSuchDestination(_) => (StatusCode::NOT_FOUND, "unknown_destination"),
            AdminError::UnknownDestination(_) => (StatusCode::CONFLICT, "unknown_destination"),
            AdminError::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
            AdminError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin request failed on the store");
                (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
            }
            AdminError::Internal(e) => {
                tracing::error!(error = %e, "admin request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        error(status, code, self.to_string())
    }
}

/// The status and code of a replay error.
fn replay_error(e: &crate::replay::ReplayError) -> (StatusCode, &'static str) {
    use crate::replay::ReplayError as E;
    match e {
        E::NothingSelected | E::Ambiguous => (StatusCode::BAD_REQUEST, "invalid_replay"),
        E::UnknownDestination(_) => (StatusCode::CONFLICT, "unknown_destination"),
        E::UnknownEvents(_) | E::NoReplay(_) => (StatusCode::NOT_FOUND, "not_found"),
        E::NotRunning(..) => (StatusCode::CONFLICT, "not_running"),
        E::Store(e) => {
            tracing::error!(error = %e, "replay request failed on the store");
            (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
        }
        E::Task(e) => {
            tracing::error!(error = %e, "replay request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}
