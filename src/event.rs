//! The three kinds of webhook Mindstamp sends.
//!
//! The body names no kind, so the kind comes from the URL path the operator configured in
//! Mindstamp (`/webhooks/view`, ...). Routes filter on it and deliveries announce it in
//! `X-Hookrouter-Event`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of Mindstamp's webhook kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A viewer watched (part of) a video.
    View,
    /// A viewer clicked or answered something in a video.
    Interaction,
    /// A viewer submitted a lead form.
    Lead,
    /// Not from Mindstamp: one of hookrouter's own alerts (a destination held, dead
    /// letters...), queued and delivered like an event. No URL or route takes this kind.
    Alert,
}

impl EventKind {
    /// Every kind Mindstamp sends, in the order they are documented.
    pub const ALL: [EventKind; 3] = [EventKind::View, EventKind::Interaction, EventKind::Lead];

    /// The lowercase name used in paths, config and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Interaction => "interaction",
            EventKind::Lead => "lead",
            EventKind::Alert => "alert",
        }
    }
}

impl From<crate::cli_args::EventKindArg> for EventKind {
    fn from(arg: crate::cli_args::EventKindArg) -> Self {
        use crate::cli_args::EventKindArg;
        match arg {
            EventKindArg::View => EventKind::View,
            EventKindArg::Interaction => EventKind::Interaction,
            EventKindArg::Lead => EventKind::Lead,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a name that is not one of the three kinds.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind {0:?} (expected view, interaction or lead)")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "view" => Ok(EventKind::View),
            "interaction" => Ok(EventKind::Interaction),
            "lead" => Ok(EventKind::Lead),
            other => Err(UnknownEventKind(other.to_string())),
        }
    }
}
