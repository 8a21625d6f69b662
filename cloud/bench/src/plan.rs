//! How much work each scenario does, and how long it may take. Every wait in
//! the benchmark ends at one of these deadlines, so a broker that stalls
//! produces a partial result instead of a hung run.

use std::time::Duration;

/// One publishers → subscriber scenario.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    /// Messages each publisher sends before measuring (connections and caches warm up).
    pub warmup_per_publisher: u64,
    /// Messages each publisher sends as fast as its QoS 1 window allows.
    pub saturated_per_publisher: u64,
    /// Total rate of the paced phase, messages per second over all publishers.
    pub paced_rate: u64,
    /// Length of the paced phase.
    pub paced_for: Duration,
    /// Longest a phase may take.
    pub deadline: Duration,
}

impl FlowPlan {
    /// Messages each publisher sends in the paced phase.
    pub fn paced_per_publisher(&self, publishers: usize) -> u64 {
        (self.paced_rate * self.paced_for.as_secs()).div_ceil(publishers.max(1) as u64)
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bytes of every benchmark message (1→1 and fan-in).
    pub payload_len: usize,
    /// QoS 1 messages a client keeps unacknowledged (IoT Core's limit; Mosquitto is configured alike).
    pub inflight: u16,
    /// Messages published and not yet delivered, over all publishers, in the
    /// end-to-end windowed phase (the local cloud queues 1,000 per subscriber).
    pub e2e_window: usize,
    /// 1 publisher → 1 subscriber.
    pub one_to_one: FlowPlan,
    /// Publishers in the fan-in scenario.
    pub fan_in_publishers: usize,
    /// N publishers → 1 subscriber.
    pub fan_in: FlowPlan,
    /// Shadow updates with delta delivery (local cloud only).
    pub shadow: FlowPlan,
    /// Idle connection counts at which the broker's RSS is read, ascending.
    pub idle_steps: Vec<usize>,
    /// TLS handshakes in progress at once while opening idle connections.
    pub idle_concurrency: usize,
    /// Longest opening one step of idle connections may take.
    pub idle_deadline: Duration,
    /// A phase ends when nothing arrived for this long (lost messages never arrive).
    pub quiet_gap: Duration,
}

impl Plan {
    /// The recorded run.
    pub fn full() -> Plan {
        Plan {
            payload_len: 256,
            inflight: 100,
            e2e_window: 1_000,
            one_to_one: FlowPlan {
                warmup_per_publisher: 1_000,
                saturated_per_publisher: 200_000,
                paced_rate: 1_000,
                paced_for: Duration::from_secs(10),
                deadline: Duration::from_secs(120),
            },
            fan_in_publishers: 100,
            fan_in: FlowPlan {
                warmup_per_publisher: 10,
                saturated_per_publisher: 2_000,
                paced_rate: 1_000,
                paced_for: Duration::from_secs(10),
                deadline: Duration::from_secs(120),
            },
            shadow: FlowPlan {
                warmup_per_publisher: 50,
                saturated_per_publisher: 20_000,
                paced_rate: 100,
                paced_for: Duration::from_secs(10),
                deadline: Duration::from_secs(120),
            },
            idle_steps: vec![1_000, 10_000],
            idle_concurrency: 50,
            idle_deadline: Duration::from_secs(180),
            quiet_gap: Duration::from_secs(5),
        }
    }

    /// A smoke run: every code path, small numbers.
    pub fn quick() -> Plan {
        Plan {
            one_to_one: FlowPlan {
                warmup_per_publisher: 100,
                saturated_per_publisher: 2_000,
                paced_rate: 500,
                paced_for: Duration::from_secs(2),
                deadline: Duration::from_secs(30),
            },
            fan_in_publishers: 10,
            fan_in: FlowPlan {
                warmup_per_publisher: 5,
                saturated_per_publisher: 100,
                paced_rate: 200,
                paced_for: Duration::from_secs(2),
                deadline: Duration::from_secs(30),
            },
            shadow: FlowPlan {
                warmup_per_publisher: 10,
                saturated_per_publisher: 200,
                paced_rate: 50,
                paced_for: Duration::from_secs(2),
                deadline: Duration::from_secs(30),
            },
            idle_steps: vec![100, 500],
            idle_deadline: Duration::from_secs(60),
            quiet_gap: Duration::from_secs(3),
            ..Plan::full()
        }
    }

    /// The most publishers any scenario uses (identities to provision).
    pub fn max_publishers(&self) -> usize {
        self.fan_in_publishers.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_phase_sends_rate_times_duration_spread_over_publishers() {
        let plan = Plan::full();
        assert_eq!(plan.one_to_one.paced_per_publisher(1), 10_000);
        assert_eq!(plan.fan_in.paced_per_publisher(100), 100);
        assert_eq!(plan.fan_in.paced_per_publisher(3), 3_334);
    }

    #[test]
    fn idle_steps_ascend() {
        for plan in [Plan::full(), Plan::quick()] {
            assert!(plan.idle_steps.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
