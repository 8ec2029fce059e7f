//! JSON responses: every answer, success or error, is a JSON object an operator can read.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// The response type of the ingress service.
pub type JsonResponse = Response<Full<Bytes>>;

/// A response with `value` as its JSON body.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> JsonResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `error` code of an error answer, kept as a response extension so metrics can count
/// rejections by reason without parsing bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCode(pub String);

/// An error answer: `{"error": "<code>", "message": "<human sentence>"}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> JsonResponse {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: String,
    }
    let message = message.into();
    let message_copy = message.clone();
    let mut response = json(
        status,
        &ErrorBody {
            error: code,
            message,
        },
    );
    response
        .extensions_mut()
        .insert(ErrorCode(code.to_string()));
    response.extensions_mut().insert(ErrorMessage(message_copy));
    response
}

/// The `message` of an error answer, kept for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage(pub String);

/// What went wrong inside hookrouter behind an error answer (the store's error, say),
/// logged with it but never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCause(pub String);
