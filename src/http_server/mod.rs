//! The HTTP plumbing both listeners share (webhooks in [`crate::ingress`], the admin API in
//! [`crate::admin`]): the HTTP/1 accept loop with its limits ([`listener`], [`admission`]),
//! hyper's own refusals given a JSON body ([`refusal`]), the peer address of a request
//! ([`peer`]) and the JSON answers every endpoint gives ([`response`]). It knows nothing of
//! webhooks or the store.

pub mod admission;
pub mod listener;
pub mod peer;
pub mod refusal;
pub mod response;

pub use listener::{serve_http1, ListenerSettings};
