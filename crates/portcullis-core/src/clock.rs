//! The clock of the request path: the kernel's coarse clocks.
//!
//! A request through the gateway reads the time several times: the deadlines of its head and of
//! the upstream's answer, the token's expiry, the last-seen note and its request id. The
//! precise clocks read the CPU's time-stamp counter, which costs 35 to 55 ns a read in a virtual
//! machine; the coarse clocks (`CLOCK_REALTIME_COARSE`, `CLOCK_MONOTONIC_COARSE`) return the
//! time of the last timer tick, 5 to 10 ns a read, and lag by at most one tick (1 to 10 ms,
//! 4 ms on a common kernel). Expiry checks in seconds, deadlines in seconds and ids ordered by
//! the millisecond do not notice; nginx caches its time the same way. Outside Linux these are
//! the standard clocks.
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
//!
//! use portcullis_core::clock;
//!
//! let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
//! assert!(precise.abs_diff(clock::since_epoch()) < Duration::from_millis(100));
//! assert!(Instant::now().duration_since(clock::instant()) < Duration::from_millis(100));
//! ```

use std::time::{Duration, Instant};

/// Time since the Unix epoch, to the last timer tick.
pub fn since_epoch() -> Duration {
    imp::since_epoch()
}

/// Seconds since the Unix epoch, to the last timer tick (0 before 1970).
pub fn unix_seconds() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

/// Now, to a timer tick, as an [`Instant`] to compare with `Instant::now()` and to make
/// deadlines of.
///
/// It may differ from `Instant::now()` by about a tick either way, so a deadline made from it
/// is not exact to the millisecond. It is the real clock: it does not stop when tokio's test
/// clock is paused.
pub fn instant() -> Instant {
    imp::instant()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::{
        sync::OnceLock,
        time::{Duration, Instant},
    };

    // Through libc (rustix's `use-libc`): libc finds the vDSO as the process was given it,
    // where rustix's own lookup crashes under valgrind.
    use rustix::time::{ClockId, Timespec, clock_gettime};

    fn duration(t: Timespec) -> Duration {
        // The kernel's clocks are never negative, nor have more than 999 999 999 nanoseconds.
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    pub(super) fn since_epoch() -> Duration {
        duration(clock_gettime(ClockId::RealtimeCoarse))
    }

    pub(super) fn instant() -> Instant {
        // `Instant` is opaque: one precise instant and the coarse clock's reading at the same
        // moment, then the coarse clock's progress since.
        static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
        let (at, coarse) = BASE.get_or_init(|| {
            (
                Instant::now(),
                duration(clock_gettime(ClockId::MonotonicCoarse)),
            )
        });
        let now = duration(clock_gettime(ClockId::MonotonicCoarse));
        *at + now.saturating_sub(*coarse)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    pub(super) fn since_epoch() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    pub(super) fn instant() -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_coarse_clocks_follow_the_precise_ones() {
        for _ in 0..3 {
            let before = Instant::now();
            let coarse = instant();
            let after = Instant::now();
            // At most a tick (10 ms on the slowest kernels) either side.
            let tick = Duration::from_millis(20);
            assert!(coarse + tick >= before && coarse <= after + tick);

            let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            assert!(precise.abs_diff(since_epoch()) <= tick);
            assert!((unix_seconds() - i64::try_from(precise.as_secs()).unwrap()).abs() <= 1);
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    #[test]
    fn the_coarse_instant_moves_forward() {
        let first = instant();
        std::thread::sleep(Duration::from_millis(50));
        let later = instant();
        assert!(later > first);
        assert!(later.duration_since(first) >= Duration::from_millis(30));
    }
}
