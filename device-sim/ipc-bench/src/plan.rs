//! How many calls and messages a run makes.

use std::time::Duration;

/// Counts and rates of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// A smoke run: every code path, small counts, no meaningful figures.
    pub quick: bool,
    /// Round-trip calls per operation before measuring.
    pub rtt_warmup: u64,
    /// Measured round-trip calls per operation and client.
    pub rtt_calls: u64,
    /// Serialized size of a pub/sub message, bytes.
    pub payload_size: usize,
    /// Messages of the end-to-end window phase.
    pub window_count: u64,
    /// Messages published and not yet acknowledged by the subscriber, at most.
    pub window: u64,
    /// Messages of the paced phase.
    pub paced_count: u64,
    /// Rate of the paced phase, messages per second.
    pub paced_rate: u64,
    /// Messages of the saturated phase.
    pub saturated_count: u64,
    /// Idle components of the "many components" core.
    pub idle_components: usize,
    /// How long a core is left alone before its memory is read.
    pub settle: Duration,
}

impl Plan {
    /// The recorded run (well under a minute of measuring on an idle 2-core machine).
    pub fn full() -> Plan {
        Plan {
            quick: false,
            rtt_warmup: 500,
            rtt_calls: 5_000,
            payload_size: 256,
            window_count: 20_000,
            window: 256,
            paced_count: 5_000,
            paced_rate: 1_000,
            saturated_count: 20_000,
            idle_components: 10,
            settle: Duration::from_secs(2),
        }
    }

    /// A smoke run.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            rtt_warmup: 20,
            rtt_calls: 200,
            window_count: 1_000,
            paced_count: 200,
            saturated_count: 1_000,
            settle: Duration::from_millis(500),
            ..Plan::full()
        }
    }

    /// How long the pub/sub scenario may take before the driver gives up on it.
    pub fn pubsub_deadline(&self) -> Duration {
        let paced = Duration::from_secs_f64(self.paced_count as f64 / self.paced_rate.max(1) as f64);
        // Generous for the unpaced phases (a slow machine does thousands per second) plus the
        // subscriber's quiet time after each phase.
        paced + Duration::from_secs(60 + (self.window_count + self.saturated_count) / 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fits_the_cores_subscription_queue() {
        // The core drops messages for a subscription whose queue (1,024) is full: the
        // windowed phase measures the rate without losses only if the window stays below it.
        for plan in [Plan::full(), Plan::quick()] {
            assert!(plan.window < 1024, "{plan:?}");
            assert!(plan.window >= 64, "acknowledgements come every 64 messages: {plan:?}");
        }
    }

    #[test]
    fn quick_is_smaller_and_keeps_ten_components() {
        let (q, f) = (Plan::quick(), Plan::full());
        assert!(q.quick && !f.quick);
        assert!(q.rtt_calls < f.rtt_calls && q.window_count < f.window_count);
        assert_eq!(q.idle_components, 10);
        assert!(q.pubsub_deadline() < f.pubsub_deadline());
    }
}
