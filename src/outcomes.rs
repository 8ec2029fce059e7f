//! The outcomes the store records, as enums: what one attempt came to
//! ([`AttemptOutcome`]) and how a settled job ended ([`SettledOutcome`]).
//!
//! They were strings, and stores written by earlier versions hold them as strings (postcard
//! in the journal and sled, JSON in the admin API). So each is serialized as exactly that
//! string and read from any string: a known one becomes its variant, an unknown one is kept
//! as [`AttemptOutcome::Other`] / [`SettledOutcome::Other`] and written back unchanged. The
//! bytes on disk and the JSON on the wire are the same as before.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a string-backed outcome enum: its known variants with their wire strings,
/// plus `Other(String)` for anything else.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know (written by another version): kept as is.
            Other(String),
        }

        impl $name {
            /// The string this outcome is recorded and shown as.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(text) => text,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(text),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map($name::from)
            }
        }
    };
}

string_enum! {
    /// What one attempt came to, as its [`AttemptRecord`](crate::queue::AttemptRecord)
    /// keeps it.
    AttemptOutcome {
        /// The destination accepted it (2xx or `success_on`).
        Delivered => "delivered",
        /// A transient failure: tried again later.
        Retry => "retry",
        /// A failure retrying cannot fix: dead-lettered.
        Permanent => "permanent",
    }
}

string_enum! {
    /// How a job that needs nothing more ended, as its settled record keeps it.
    SettledOutcome {
        /// Delivered.
        Delivered => "delivered",
        /// Dropped from the dead letters by an operator.
        Dropped => "dropped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt record as earlier versions wrote it: the outcome a plain string.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldAttempt {
        attempt: u32,
        at_ms: u64,
        latency_ms: u64,
        status: Option<u16>,
        outcome: String,
        error: Option<String>,
    }

    /// The same record with the enum, field for field.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct NewAttempt {
        attempt: u32,
        at_ms: u64,
        latency_ms: u64,
        status: Option<u16>,
        outcome: AttemptOutcome,
        error: Option<String>,
    }

    fn old(outcome: &str) -> OldAttempt {
        OldAttempt {
            attempt: 3,
            at_ms: 1_700_000_000_123,
            latency_ms: 41,
            status: Some(503),
            outcome: outcome.into(),
            error: Some("HTTP 503".into()),
        }
    }

    #[test]
    fn an_old_record_decodes_into_the_enum_and_reencodes_byte_for_byte() {
        for (text, expected) in [
            ("delivered", AttemptOutcome::Delivered),
            ("retry", AttemptOutcome::Retry),
            ("permanent", AttemptOutcome::Permanent),
            (
                "from-a-later-version",
                AttemptOutcome::Other("from-a-later-version".into()),
            ),
        ] {
            let bytes = postcard::to_allocvec(&old(text)).unwrap();
            let new: NewAttempt = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(new.outcome, expected);
            assert_eq!(postcard::to_allocvec(&new).unwrap(), bytes, "{text}");
            // And back: what this version writes, an earlier one reads.
            let back: OldAttempt = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, old(text));
            let json = serde_json::to_string(&old(text)).unwrap();
            assert_eq!(serde_json::to_string(&new).unwrap(), json);
        }
    }

    #[test]
    fn settled_outcomes_are_their_strings_on_disk_and_on_the_wire() {
        for (text, outcome) in [
            ("delivered", SettledOutcome::Delivered),
            ("dropped", SettledOutcome::Dropped),
            ("expired", SettledOutcome::Other("expired".into())),
        ] {
            let string = postcard::to_allocvec(&text.to_string()).unwrap();
            assert_eq!(postcard::to_allocvec(&outcome).unwrap(), string);
            let decoded: SettledOutcome = postcard::from_bytes(&string).unwrap();
            assert_eq!(decoded, outcome);
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(outcome, text);
            assert_eq!(outcome.to_string(), text);
        }
    }
}
