//! Reading a webhook's body: into one buffer, within `max_body_bytes`, and within a memory
//! budget shared by every body being received or handled.
//!
//! hyper hands a body over in the chunks the socket delivered, each a slice of the
//! connection's read buffer. Keeping the chunks until the body is complete (what
//! `BodyExt::collect` does) keeps every buffer they point into: a 60 KB body trickled one
//! byte per TCP segment held about 8 KB per byte, 255 MB. So each chunk is copied into one
//! buffer as it arrives and dropped at once: a body costs its own size, whatever its pace.
//!
//! And before the first byte is read, a body reserves its size (its `Content-Length`, or
//! `max_body_bytes` when it does not say) from a [`Budget`], and keeps the reservation
//! until its request is answered; beyond the budget a body waits for room (within
//! `body_read_timeout`). So all bodies in memory together stay under the budget, however
//! many connections send one at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB, so that a reservation fits in a semaphore's `u32`.
const UNIT: usize = 1024;

/// The smallest budget: bodies of 64 MiB in memory at once.
const MIN_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Memory for the bodies of requests in progress.
#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// A body's share of the [`Budget`], given back when dropped (after its request).
#[derive(Debug)]
pub struct Reserved {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    /// 64 MiB, or four bodies of `max_body_bytes` if that is more (so that a few of the
    /// largest can always be received side by side).
    pub fn new(max_body_bytes: usize) -> Budget {
        let bytes = MIN_BUDGET_BYTES.max(max_body_bytes.saturating_mul(4));
        let total_units = bytes.div_ceil(UNIT);
        Budget {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Waits until `bytes` fit (a reservation larger than the whole budget takes all of it).
    async fn reserve(&self, bytes: usize) -> Result<Reserved, BodyError> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.total_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        // The semaphore is never closed, so the error cannot happen.
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| BodyError::Busy)?;
        Ok(Reserved { _permit: permit })
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the limit arrived (or was declared).
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// `max_body_bytes`.
        limit: usize,
    },
    /// The whole body did not arrive within the body timeout.
    #[error("the body did not arrive in time")]
    Timeout,
    /// The bodies of other requests took the whole budget for the body timeout.
    #[error("too many bodies are being received at once; send it again later")]
    Busy,
    /// The connection failed mid-body.
    #[error("could not read the body: {0}")]
    Read(#[source] hyper::Error),
}

/// Reads `body` (of `declared` length, if the request said) into one buffer of at most
/// `limit` bytes within `timeout`, after reserving its size from `budget`.
pub async fn read(
    body: &mut hyper::body::Incoming,
    declared: Option<u64>,
    limit: usize,
    budget: &Budget,
    timeout: Duration,
) -> Result<(Bytes, Reserved), BodyError> {
    let expected = match declared {
        Some(len) if len > limit as u64 => return Err(BodyError::TooLarge { limit }),
        Some(len) => Some(len as usize),
        None => None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let reserved = tokio::time::timeout_at(deadline, budget.reserve(expected.unwrap_or(limit)))
        .await
        .map_err(|_| BodyError::Busy)??;
    let bytes = tokio::time::timeout_at(deadline, collect(body, expected, limit))
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok((bytes, reserved))
}

/// Copies every data frame into one buffer, dropping each as soon as it is copied.
async fn collect(
    body: &mut hyper::body::Incoming,
    expected: Option<usize>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let mut buf: Vec<u8> = Vec::with_capacity(expected.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing we keep
        };
        if buf.len() + data.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if buf.capacity() - buf.len() < data.len() {
            // Grow by doubling, but never past the limit.
            let want = (buf.capacity() * 2)
                .max(buf.len() + data.len())
                .max(8 * 1024)
                .min(limit);
            buf.reserve_exact(want - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_budget_makes_the_next_body_wait_until_one_is_answered() {
        let budget = Budget::new(1);
        let all = budget.reserve(MIN_BUDGET_BYTES).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(1)).await;
        assert!(
            waiting.is_err(),
            "nothing is left while the first holds it all"
        );
        drop(all);
        let _one = tokio::time::timeout(Duration::from_secs(5), budget.reserve(1))
            .await
            .expect("room again once the first is dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn the_budget_holds_four_of_the_largest_bodies() {
        let budget = Budget::new(100 * 1024 * 1024);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(budget.reserve(100 * 1024 * 1024).await.unwrap());
        }
        assert_eq!(budget.units.available_permits(), 0);
    }
}
