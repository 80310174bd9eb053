//! Wall-clock time as the service stores and compares it: milliseconds since the Unix epoch.
//!
//! One module, so that the verifier, the inbox and the CLI agree on the unit and on what a
//! time before the epoch means. The inbox's leases and retry times are read off the clock of
//! the storage that holds them (this process's clock for SQLite), never a caller's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (negative before it).
pub fn millis_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    millis_since_epoch(SystemTime::now())
}

/// A duration in whole milliseconds, saturating (a year of retries fits many times over).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The time `ms` milliseconds after the epoch (the epoch itself for negative values).
pub fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_saturate() {
        assert_eq!(millis_since_epoch(system_time(1_796_048_768_187)), 1_796_048_768_187);
        assert_eq!(millis_since_epoch(UNIX_EPOCH - Duration::from_millis(5)), -5);
        assert_eq!(millis(Duration::MAX), i64::MAX);
        assert_eq!(system_time(-1), UNIX_EPOCH);
    }
}
