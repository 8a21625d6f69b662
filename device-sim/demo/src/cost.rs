//! What a pump site costs in AWS a month: IoT Core messages (5 KiB units of payload and topic),
//! Device Shadow operations (1 KiB units), connection minutes and the Greengrass core device
//! fee, at the list prices of `docs/prices.json`; and the same for a naive design (one JSON
//! message per reading, the full shadow reported with every reading), so the two compare.
//!
//! Each topic is billed by its own rule ([`units`]):
//! - a topic the device publishes to (`dt/pump/…`): one message per 5 KiB of payload and topic;
//! - `…/shadow/…/update/accepted`: the shadow update that was accepted: one shadow operation per
//!   KiB of the update request (its `state` and `clientToken`, as the request carried them), and
//!   the request's own MQTT message (5 KiB units of the request and the `…/update` topic);
//! - other shadow response topics (`…/update/documents`, `…/delta`, …): nothing for the site; a
//!   cloud application that subscribes to them pays for what it receives.

use std::fmt::Write as _;

use cloud_api::limits::{message_billing_units, shadow_billing_units};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The price list, as `docs/prices.json` has it.
const PRICES_JSON: &str = include_str!("../../../docs/prices.json");

/// Minutes in the month the cost is given for (30 days).
pub const MINUTES_PER_MONTH: f64 = 30.0 * 24.0 * 60.0;

/// AWS list prices, with where and when they hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// The AWS Region they are for.
    pub region: String,
    /// Their currency.
    pub currency: String,
    /// When they were last checked against AWS's pricing pages (YYYY-MM-DD).
    pub checked: String,
    /// The pages they come from.
    pub sources: Vec<String>,
    /// IoT Core messaging, per million 5 KiB messages.
    pub iot_core_messages_per_million: f64,
    /// Which volume tier the message price is.
    pub iot_core_messages_tier: String,
    /// Device Shadow and registry, per million 1 KiB operations.
    pub shadow_and_registry_operations_per_million: f64,
    /// Connectivity, per million connection minutes.
    pub connection_minutes_per_million: f64,
    /// Greengrass, per active core device per month.
    pub greengrass_core_device_per_month: f64,
}

impl Prices {
    /// The prices of `docs/prices.json`.
    pub fn shipped() -> anyhow::Result<Prices> {
        Prices::parse(PRICES_JSON)
    }

    /// Parses a price list; every price must be a finite number, zero or more.
    pub fn parse(text: &str) -> anyhow::Result<Prices> {
        let p: Prices = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("prices: {e}"))?;
        for (name, v) in [
            ("iot_core_messages_per_million", p.iot_core_messages_per_million),
            ("shadow_and_registry_operations_per_million", p.shadow_and_registry_operations_per_million),
            ("connection_minutes_per_million", p.connection_minutes_per_million),
            ("greengrass_core_device_per_month", p.greengrass_core_device_per_month),
        ] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "prices: {name} is {v}, not a price");
        }
        Ok(p)
    }
}

/// Billable units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Units {
    /// IoT Core messages (5 KiB units).
    pub messages: u64,
    /// Device Shadow operations (1 KiB units).
    pub shadow_operations: u64,
}

impl std::ops::Add for Units {
    type Output = Units;
    fn add(self, o: Units) -> Units {
        Units { messages: self.messages + o.messages, shadow_operations: self.shadow_operations + o.shadow_operations }
    }
}

/// What a shadow update request of `request_len` bytes to `request_topic` costs: the operation
/// and the MQTT message that carries it.
fn shadow_update(request_topic: &str, request_len: usize) -> Units {
    Units {
        messages: message_billing_units(request_len + request_topic.len()),
        shadow_operations: shadow_billing_units(request_len),
    }
}

/// What one message seen on `topic` with `payload` bills the site (the rules in the module's
/// documentation).
pub fn units(topic: &str, payload: &[u8]) -> Units {
    if !topic.starts_with("$aws/things/") || !topic.contains("/shadow/") {
        return Units { messages: message_billing_units(payload.len() + topic.len()), shadow_operations: 0 };
    }
    let Some(request_topic) = topic.strip_suffix("/update/accepted").map(|t| format!("{t}/update")) else {
        return Units::default();
    };
    let accepted: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let mut request = json!({"state": accepted.get("state").cloned().unwrap_or(Value::Null)});
    if let Some(token) = accepted.get("clientToken") {
        request["clientToken"] = token.clone();
    }
    shadow_update(&request_topic, request.to_string().len())
}

/// Usage over a month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// IoT Core messages.
    pub messages: f64,
    /// Device Shadow operations.
    pub shadow_operations: f64,
    /// Minutes connected (the core device's one MQTT connection).
    pub connection_minutes: f64,
    /// Greengrass core devices.
    pub core_devices: f64,
}

/// A month's cost, by item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    /// IoT Core messaging.
    pub messages: f64,
    /// Device Shadow operations.
    pub shadow_operations: f64,
    /// Connectivity.
    pub connection_minutes: f64,
    /// The Greengrass core device fee.
    pub greengrass: f64,
    /// All of it.
    pub total: f64,
}

/// The cost of `usage` at `prices`.
pub fn monthly_cost(usage: &Usage, prices: &Prices) -> Cost {
    let messages = usage.messages / 1e6 * prices.iot_core_messages_per_million;
    let shadow_operations = usage.shadow_operations / 1e6 * prices.shadow_and_registry_operations_per_million;
    let connection_minutes = usage.connection_minutes / 1e6 * prices.connection_minutes_per_million;
    let greengrass = usage.core_devices * prices.greengrass_core_device_per_month;
    Cost {
        messages,
        shadow_operations,
        connection_minutes,
        greengrass,
        total: messages + shadow_operations + connection_minutes + greengrass,
    }
}

/// What a run measured that the monthly cost is projected from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    /// How long the cloud observed, minutes.
    pub minutes: f64,
    /// Readings carried by the telemetry batches.
    pub readings: u64,
    /// What the telemetry batches billed.
    pub telemetry: Units,
    /// What everything else billed: anomaly events, shadow updates.
    pub events: Units,
    /// Bytes of one reading as a message of its own (mean payload, topic included).
    pub reading_message_bytes: usize,
    /// Bytes of a shadow update request reporting the whole `reported` state at the end.
    pub full_report_bytes: usize,
    /// The topic a device reports its shadow on.
    pub shadow_update_topic: String,
}

impl Observed {
    /// From the run: the units billed per topic, the telemetry batches (to count readings and
    /// size one as its own message on `telemetry_topic`), the cloud shadow at the end.
    pub fn from_run(
        minutes: f64,
        billed: &[(String, Units)],
        telemetry_topic: &str,
        batches: &[Value],
        shadow: &Value,
        shadow_update_topic: &str,
    ) -> Observed {
        let (telemetry, events) = billed.iter().fold((Units::default(), Units::default()), |(t, e), (topic, u)| {
            if topic == telemetry_topic { (t + *u, e) } else { (t, e + *u) }
        });
        let readings: Vec<&Value> = batches.iter().filter_map(|b| b["readings"].as_array()).flatten().collect();
        let thing = batches.first().and_then(|b| b["thing"].as_str()).unwrap_or_default();
        let reading_bytes: usize =
            readings.iter().map(|r| json!({"v": 1, "thing": thing, "reading": r}).to_string().len()).sum();
        let reported = shadow.pointer("/state/reported").cloned().unwrap_or(Value::Null);
        Observed {
            minutes,
            readings: readings.len() as u64,
            telemetry,
            events,
            reading_message_bytes: reading_bytes.checked_div(readings.len()).unwrap_or(0) + telemetry_topic.len(),
            full_report_bytes: json!({"state": {"reported": reported}}).to_string().len(),
            shadow_update_topic: shadow_update_topic.to_owned(),
        }
    }

    /// Readings per second in the run.
    pub fn readings_per_second(&self) -> f64 {
        if self.minutes > 0.0 { self.readings as f64 / (self.minutes * 60.0) } else { 0.0 }
    }

    /// A month of this design with `readings_per_second`: telemetry scales with the readings,
    /// the events keep the run's rate; one core device connected all month.
    pub fn designed(&self, readings_per_second: f64) -> Usage {
        let readings = readings_per_second * 60.0 * MINUTES_PER_MONTH;
        let scaled = |units: u64| if self.readings == 0 { 0.0 } else { readings * units as f64 / self.readings as f64 };
        self.month(scaled(self.telemetry.messages), scaled(self.telemetry.shadow_operations))
    }

    /// A month of the naive design with `readings_per_second`: each reading its own message, and
    /// with each reading the full `reported` state as a shadow update; the events as in the run.
    pub fn naive(&self, readings_per_second: f64) -> Usage {
        let readings = readings_per_second * 60.0 * MINUTES_PER_MONTH;
        let report = shadow_update(&self.shadow_update_topic, self.full_report_bytes);
        self.month(
            readings * (message_billing_units(self.reading_message_bytes) + report.messages) as f64,
            readings * report.shadow_operations as f64,
        )
    }

    fn month(&self, telemetry_messages: f64, telemetry_shadow: f64) -> Usage {
        let per_month = if self.minutes > 0.0 { MINUTES_PER_MONTH / self.minutes } else { 0.0 };
        Usage {
            messages: telemetry_messages + self.events.messages as f64 * per_month,
            shadow_operations: telemetry_shadow + self.events.shadow_operations as f64 * per_month,
            connection_minutes: MINUTES_PER_MONTH,
            core_devices: 1.0,
        }
    }
}

/// The monthly cost of a pump site, this design against the naive one, at the run's reading
/// rate and at the recipe's (one reading a second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteCost {
    /// The prices used.
    pub prices: Prices,
    /// What the projection starts from.
    pub observed: Observed,
    /// (readings per second, label, this design, naive design).
    pub scenarios: Vec<Scenario>,
}

/// One reading rate, both designs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// What the rate is.
    pub label: String,
    /// Readings per second.
    pub readings_per_second: f64,
    /// This design's usage.
    pub usage: Usage,
    /// Its cost.
    pub cost: Cost,
    /// The naive design's usage.
    pub naive_usage: Usage,
    /// Its cost.
    pub naive_cost: Cost,
}

/// The recipe's poll period: one reading a second.
pub const RECIPE_READINGS_PER_SECOND: f64 = 1.0;

impl SiteCost {
    /// Both designs at the run's reading rate and at the recipe's.
    pub fn new(observed: Observed, prices: Prices) -> SiteCost {
        let rates = [
            ("the demo's poll rate", observed.readings_per_second()),
            ("the recipe's poll period (1 s)", RECIPE_READINGS_PER_SECOND),
        ];
        let scenarios = rates
            .iter()
            .map(|(label, rate)| {
                let (usage, naive_usage) = (observed.designed(*rate), observed.naive(*rate));
                Scenario {
                    label: (*label).into(),
                    readings_per_second: *rate,
                    usage,
                    cost: monthly_cost(&usage, &prices),
                    naive_usage,
                    naive_cost: monthly_cost(&naive_usage, &prices),
                }
            })
            .collect();
        SiteCost { prices, observed, scenarios }
    }

    /// The comparison as Markdown (the demo's report; `docs/payloads.md` quotes it).
    pub fn markdown(&self) -> String {
        let p = &self.prices;
        let o = &self.observed;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "A month (30 days) of one pump site: one Greengrass core device connected all month, at AWS list prices ({}, {}, checked {}: messages ${:.2} per million ({}), shadow operations ${:.2} per million, connection minutes ${:.2} per million, Greengrass ${:.2} per core device a month; `docs/prices.json`).\n",
            p.region,
            p.currency,
            p.checked,
            p.iot_core_messages_per_million,
            p.iot_core_messages_tier,
            p.shadow_and_registry_operations_per_million,
            p.connection_minutes_per_million,
            p.greengrass_core_device_per_month
        );
        let _ = writeln!(
            s,
            "Projected from this run: {:.1} minutes, {} readings in telemetry batches ({:.2} per second) billing {} messages; anomaly events and shadow updates billing {} messages and {} shadow operations, kept at the run's rate. The naive design sends each reading as its own message ({} bytes with its topic) and reports the full shadow with each reading ({} bytes a request).\n",
            o.minutes,
            o.readings,
            o.readings_per_second(),
            o.telemetry.messages,
            o.events.messages,
            o.events.shadow_operations,
            o.reading_message_bytes,
            o.full_report_bytes
        );
        let _ = writeln!(
            s,
            "| readings | design | messages a month | shadow operations a month | messages, $ | shadow, $ | connectivity, $ | Greengrass, $ | total a month, $ |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for sc in &self.scenarios {
            for (design, u, c) in [("this design", &sc.usage, &sc.cost), ("naive", &sc.naive_usage, &sc.naive_cost)] {
                let _ = writeln!(
                    s,
                    "| {:.2}/s ({}) | {design} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** |",
                    sc.readings_per_second,
                    sc.label,
                    bench_common::format::thousands(u.messages.round() as u64),
                    bench_common::format::thousands(u.shadow_operations.round() as u64),
                    c.messages,
                    c.shadow_operations,
                    c.connection_minutes,
                    c.greengrass,
                    c.total
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices::shipped().unwrap()
    }

    #[test]
    fn the_shipped_prices_are_aws_us_east_1_list_prices() {
        let p = prices();
        assert_eq!((p.region.as_str(), p.currency.as_str()), ("us-east-1", "USD"));
        assert_eq!(p.iot_core_messages_per_million, 1.00);
        assert_eq!(p.shadow_and_registry_operations_per_million, 1.25);
        assert_eq!(p.connection_minutes_per_million, 0.08);
        assert_eq!(p.greengrass_core_device_per_month, 0.16);
        assert!(Prices::parse(&PRICES_JSON.replace("0.08", "-0.08")).is_err());
        assert!(Prices::parse("{}").is_err());
    }

    #[test]
    fn each_topic_is_billed_by_its_own_rule() {
        // A device topic: 5 KiB units of payload and topic.
        let topic = "dt/pump/pump-station-1/telemetry";
        assert_eq!(units(topic, &vec![b'x'; 5120 - topic.len()]), Units { messages: 1, shadow_operations: 0 });
        assert_eq!(units(topic, &vec![b'x'; 5121 - topic.len()]), Units { messages: 2, shadow_operations: 0 });
        // An accepted update: 1 KiB units of the request (state and clientToken), not of the
        // response's metadata, and the request's own message.
        let base = "$aws/things/t/shadow/name/pump/update";
        let state = json!({"reported": {"pad": "y".repeat(980)}});
        let request = json!({"state": state}).to_string().len();
        assert!(request > 1024 - 30 && request < 1024, "{request}");
        let accepted =
            json!({"state": state, "metadata": {"reported": {"pad": {"timestamp": 1}}}, "version": 3, "timestamp": 1});
        let u = units(&format!("{base}/accepted"), accepted.to_string().as_bytes());
        assert_eq!(u, Units { messages: 1, shadow_operations: 1 });
        let with_token = json!({"state": state, "clientToken": "c".repeat(40), "version": 3});
        assert_eq!(units(&format!("{base}/accepted"), with_token.to_string().as_bytes()).shadow_operations, 2);
        // What the service sends to subscribers is not the site's.
        for response in ["documents", "delta", "rejected"] {
            assert_eq!(units(&format!("{base}/{response}"), b"{}"), Units::default(), "{response}");
        }
    }

    #[test]
    fn a_month_costs_each_unit_at_its_price() {
        let usage = Usage { messages: 2e6, shadow_operations: 4e6, connection_minutes: 43_200.0, core_devices: 1.0 };
        let c = monthly_cost(&usage, &prices());
        assert_eq!((c.messages, c.shadow_operations, c.greengrass), (2.0, 5.0, 0.16));
        assert!((c.connection_minutes - 0.003456).abs() < 1e-12);
        assert!((c.total - 7.163456).abs() < 1e-9);
    }

    fn observed() -> Observed {
        let telemetry = "dt/pump/t/telemetry";
        let reading = json!({"seq": 1, "speed_rpm": 2900.0});
        let batches = vec![json!({"v": 1, "thing": "t", "readings": vec![reading; 15]}); 4];
        let billed = vec![
            (telemetry.to_owned(), Units { messages: 4, shadow_operations: 0 }),
            ("dt/pump/t/anomalies".to_owned(), Units { messages: 2, shadow_operations: 0 }),
            ("$aws/things/t/shadow/name/pump/update/accepted".to_owned(), Units { messages: 3, shadow_operations: 3 }),
        ];
        let shadow = json!({"state": {"reported": {"speedRpm": 2500}}, "version": 9});
        Observed::from_run(1.0, &billed, telemetry, &batches, &shadow, "$aws/things/t/shadow/name/pump/update")
    }

    #[test]
    fn the_run_is_split_into_telemetry_per_reading_and_events() {
        let o = observed();
        assert_eq!(o.readings, 60);
        assert_eq!(o.telemetry, Units { messages: 4, shadow_operations: 0 });
        assert_eq!(o.events, Units { messages: 5, shadow_operations: 3 });
        let one = json!({"v": 1, "thing": "t", "reading": {"seq": 1, "speed_rpm": 2900.0}}).to_string().len();
        assert_eq!(o.reading_message_bytes, one + "dt/pump/t/telemetry".len());
        assert_eq!(o.full_report_bytes, r#"{"state":{"reported":{"speedRpm":2500}}}"#.len());
        assert_eq!(o.readings_per_second(), 1.0);
    }

    #[test]
    fn batching_and_delta_reports_cost_less_than_a_message_and_a_full_report_per_reading() {
        let o = observed();
        let month = MINUTES_PER_MONTH;
        let ours = o.designed(1.0);
        // 60 readings a minute in 4 batches; 5 event messages and 3 operations a minute.
        assert_eq!(ours.messages, month * 4.0 + month * 5.0);
        assert_eq!(ours.shadow_operations, month * 3.0);
        assert_eq!((ours.connection_minutes, ours.core_devices), (month, 1.0));
        let naive = o.naive(1.0);
        // Per reading: its message and the full report's message and operation.
        assert_eq!(naive.messages, month * 60.0 * 2.0 + month * 5.0);
        assert_eq!(naive.shadow_operations, month * 60.0 + month * 3.0);
        let site = SiteCost::new(o, prices());
        assert_eq!(site.scenarios.len(), 2);
        let sc = &site.scenarios[1];
        assert!(sc.cost.total < sc.naive_cost.total);
        assert_eq!(sc.cost.greengrass, 0.16);
        let md = site.markdown();
        assert!(md.contains("us-east-1") && md.contains("checked 2026-"), "{md}");
        assert!(
            md.contains(&format!(
                "| 1.00/s (the recipe's poll period (1 s)) | naive | {} |",
                bench_common::format::thousands((month * 125.0) as u64)
            )),
            "{md}"
        );
    }
}
