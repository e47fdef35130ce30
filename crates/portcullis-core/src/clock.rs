//! The clock of the request path: the kernel's coarse clocks.
//!
//! A request through the gateway reads the time several times: the token's expiry, the
//! last-seen note, its request id, and the deadlines of its head and of the upstream's answer.
//! The precise clocks read the CPU's time-stamp counter, which costs 35 to 55 ns a read in a
//! virtual machine; the coarse clocks (`CLOCK_REALTIME_COARSE`, `CLOCK_MONOTONIC_COARSE`) return
//! the time of the last timer tick, 5 to 10 ns a read, and lag by about one tick (1 to 10 ms,
//! 4 ms on a common kernel; more on a loaded virtual machine, whose ticks come late). Expiry
//! checks in seconds and ids ordered by the millisecond do not notice; nginx caches its time the
//! same way. Deadlines are the exception ([`deadline`]). Outside Linux these are the standard
//! clocks.
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

/// Now, to a timer tick, as an [`Instant`] to compare with `Instant::now()`.
///
/// It may differ from `Instant::now()` by about a tick either way, and lag by more when ticks
/// come late: make deadlines with [`deadline`]. It is the real clock: it does not stop when
/// tokio's test clock is paused.
pub fn instant() -> Instant {
    imp::instant()
}

/// A deadline `after` from now, from the precise clock: a timeout made from it never fires
/// early.
///
/// Not from the coarse clock: a tick's allowance does not bound its lag, as a loaded virtual
/// machine's ticks come late, and such deadlines came out early under the test suite's load.
/// The gateway's two a request (its head's and its upstream's deadline) cost about 85 ns.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// use portcullis_core::clock;
///
/// let before = Instant::now();
/// let deadline = clock::deadline(Duration::from_secs(5));
/// assert!(deadline >= before + Duration::from_secs(5));
/// ```
pub fn deadline(after: Duration) -> Instant {
    Instant::now() + after
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

    /// `Instant` is opaque: a coarse reading and a precise instant taken just after it.
    struct Base {
        coarse: Duration,
        at: Instant,
    }

    fn base() -> &'static Base {
        static BASE: OnceLock<Base> = OnceLock::new();
        BASE.get_or_init(|| {
            let coarse = duration(clock_gettime(ClockId::MonotonicCoarse));
            Base {
                coarse,
                at: Instant::now(),
            }
        })
    }

    pub(super) fn instant() -> Instant {
        // The base's precise instant plus the coarse clock's progress since. The base's coarse
        // reading lags its instant as the reading now lags the precise now, each by about a
        // tick: so this lies about a tick from `Instant::now()`, either way.
        let base = base();
        let now = duration(clock_gettime(ClockId::MonotonicCoarse));
        base.at + now.saturating_sub(base.coarse)
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
