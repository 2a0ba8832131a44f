//! Failing fast while the store is down.

use std::time::Duration;

/// Fails operations fast while the store is known to be down. An outage
/// otherwise reaches a caller only after every store call before its own
/// waited out its retries in turn (a commit's record, the read that checks
/// whether it landed, the commits queued behind it): minutes instead of
/// `store_timeout`. Open for `BREAKER_OPEN` after a failure; then calls go
/// through again, and the first that fails opens it anew.
#[derive(Default)]
pub(super) struct Breaker {
    open_until: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// How long operations fail at once after one failed after its retries.
const BREAKER_OPEN: Duration = Duration::from_secs(2);

impl Breaker {
    pub(super) fn is_open(&self) -> bool {
        let mut g = self.open_until.lock();
        match *g {
            Some(t) if std::time::Instant::now() < t => true,
            Some(_) => {
                *g = None;
                false
            }
            None => false,
        }
    }

    pub(super) fn trip(&self) {
        *self.open_until.lock() = Some(std::time::Instant::now() + BREAKER_OPEN);
    }
}
