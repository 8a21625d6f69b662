use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::time::{Clock, ManualClock};

/// 2023-11-14 22:14:00 UTC, on a minute.
const START: u64 = 1_700_000_040_000;

fn cloudwatch() -> (CloudWatch, Arc<ManualClock>) {
    let clock = ManualClock::at(START);
    let cw = CloudWatch::open(Store::in_memory().unwrap(), clock.clone(), "us-east-1", "000000000000").unwrap();
    (cw, clock)
}

fn put(cw: &CloudWatch, clock: &ManualClock, value: f64) {
    let now = clock.now_millis() as f64 / 1000.0;
    let request = json!({"Namespace": "Pump", "MetricData": [{"MetricName": "rpm", "Value": value, "Timestamp": now,
        "Dimensions": [{"Name": "thing", "Value": "pump-1"}], "Unit": "Count"}]});
    cw.call(Operation::PutMetricData, request).unwrap();
}

fn alarm(cw: &CloudWatch) -> Value {
    let described = cw.call(Operation::DescribeAlarms, json!({"AlarmNames": ["high-rpm"]})).unwrap().to_json();
    described["MetricAlarms"][0].clone()
}

#[test]
fn statistics_come_back_per_period_in_both_operations() {
    let (cw, clock) = cloudwatch();
    for v in [10.0, 20.0] {
        put(&cw, &clock, v);
    }
    clock.advance(Duration::from_secs(60));
    put(&cw, &clock, 60.0);
    let start = START as f64 / 1000.0;
    let stats = cw
        .call(
            Operation::GetMetricStatistics,
            json!({"Namespace": "Pump", "MetricName": "rpm", "Dimensions": [{"Name": "thing", "Value": "pump-1"}],
                "StartTime": start, "EndTime": start + 120.0, "Period": 60, "Statistics": ["Average", "SampleCount", "Maximum"]}),
        )
        .unwrap()
        .to_json();
    assert_eq!(
        stats["Datapoints"],
        json!([{"Timestamp": start, "Average": 15.0, "SampleCount": 2.0, "Maximum": 20.0, "Unit": "Count"},
            {"Timestamp": start + 60.0, "Average": 60.0, "SampleCount": 1.0, "Maximum": 60.0, "Unit": "Count"}])
    );
    let data = cw
        .call(
            Operation::GetMetricData,
            json!({"StartTime": start, "EndTime": start + 120.0, "MetricDataQueries": [{"Id": "sum",
                "MetricStat": {"Metric": {"Namespace": "Pump", "MetricName": "rpm", "Dimensions": [{"Name": "thing", "Value": "pump-1"}]},
                    "Period": 60, "Stat": "Sum"}}]}),
        )
        .unwrap()
        .to_json();
    let result = &data["MetricDataResults"][0];
    assert_eq!(result["Timestamps"], json!([start + 60.0, start]), "newest first by default");
    assert_eq!(result["Values"], json!([60.0, 30.0]));
    assert_eq!(result["Label"], "rpm");
    let other = cw
        .call(
            Operation::GetMetricStatistics,
            json!({"Namespace": "Pump", "MetricName": "rpm", "StartTime": start, "EndTime": start + 120.0,
                "Period": 60, "Statistics": ["Sum"]}),
        )
        .unwrap()
        .to_json();
    assert_eq!(other["Datapoints"], json!([]), "a metric is its name and all of its dimensions");
    let listed = cw.call(Operation::ListMetrics, json!({"Dimensions": [{"Name": "thing"}]})).unwrap().to_json();
    assert_eq!(listed["Metrics"].as_array().unwrap().len(), 1);
    let expression = cw.call(
        Operation::GetMetricData,
        json!({"StartTime": start, "EndTime": start + 60.0, "MetricDataQueries": [{"Id": "e", "Expression": "m1 * 2"}]}),
    );
    assert!(expression.unwrap_err().message.contains("expressions"));
}

#[test]
fn an_alarm_goes_from_insufficient_data_to_alarm_and_back_to_ok() {
    let (cw, clock) = cloudwatch();
    cw.call(
        Operation::PutMetricAlarm,
        json!({"AlarmName": "high-rpm", "MetricName": "rpm", "Namespace": "Pump", "Statistic": "Maximum",
            "Dimensions": [{"Name": "thing", "Value": "pump-1"}], "Period": 60, "EvaluationPeriods": 1,
            "Threshold": 50.0, "ComparisonOperator": "GreaterThanThreshold",
            "AlarmActions": ["arn:aws:sns:us-east-1:000000000000:ops"]}),
    )
    .unwrap();
    assert_eq!(alarm(&cw)["StateValue"], "INSUFFICIENT_DATA");
    assert_eq!(alarm(&cw)["StateReason"], "Unchecked: Initial alarm creation");
    assert_eq!(alarm(&cw)["AlarmArn"], "arn:aws:cloudwatch:us-east-1:000000000000:alarm:high-rpm");
    assert_eq!(cw.evaluate_alarms().unwrap(), 1, "no data: INSUFFICIENT_DATA with AWS's reason");
    assert_eq!(alarm(&cw)["StateReason"], "Insufficient Data: 1 datapoint was unknown.");

    clock.advance(Duration::from_secs(5));
    put(&cw, &clock, 90.0);
    assert_eq!(cw.evaluate_alarms().unwrap(), 1);
    let alarmed = alarm(&cw);
    assert_eq!(alarmed["StateValue"], "ALARM");
    assert_eq!(
        alarmed["StateReason"],
        "Threshold Crossed: 1 datapoint [90.0 (14/11/23 22:14:00)] was greater than the threshold (50.0)."
    );
    assert_eq!(cw.evaluate_alarms().unwrap(), 0, "the same state is not a change");

    clock.advance(Duration::from_secs(60));
    put(&cw, &clock, 10.0);
    cw.evaluate_alarms().unwrap();
    assert_eq!(alarm(&cw)["StateValue"], "OK");
    assert_eq!(alarm(&cw)["AlarmActions"], json!(["arn:aws:sns:us-east-1:000000000000:ops"]));

    let listed = cw.call(Operation::DescribeAlarms, json!({"StateValue": "ALARM"})).unwrap().to_json();
    assert_eq!(listed["MetricAlarms"], json!([]));
    let history = cw
        .call(Operation::DescribeAlarmHistory, json!({"AlarmName": "high-rpm", "HistoryItemType": "StateUpdate"}))
        .unwrap()
        .to_json();
    let summaries: Vec<&str> = history["AlarmHistoryItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["HistorySummary"].as_str().unwrap())
        .collect();
    assert_eq!(
        summaries,
        [
            "Alarm updated from ALARM to OK",
            "Alarm updated from INSUFFICIENT_DATA to ALARM",
            "Alarm updated from INSUFFICIENT_DATA to INSUFFICIENT_DATA"
        ]
    );

    cw.call(Operation::SetAlarmState, json!({"AlarmName": "high-rpm", "StateValue": "ALARM", "StateReason": "drill"}))
        .unwrap();
    assert_eq!(alarm(&cw)["StateReason"], "drill");
    let missing = cw.call(Operation::DeleteAlarms, json!({"AlarmNames": ["high-rpm", "nope"]})).unwrap_err();
    assert_eq!((missing.status, missing.code), (404, "ResourceNotFound"));
    assert_eq!(alarm(&cw)["AlarmName"], "high-rpm", "a failed delete deletes nothing");
    cw.call(Operation::DeleteAlarms, json!({"AlarmNames": ["high-rpm"]})).unwrap();
    assert_eq!(alarm(&cw), Value::Null);
}

#[test]
fn alarms_are_checked_and_authorized_per_alarm() {
    let (cw, _) = cloudwatch();
    let base = json!({"AlarmName": "a", "MetricName": "rpm", "Namespace": "Pump", "Statistic": "Average",
        "Period": 60, "EvaluationPeriods": 2, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold"});
    for (change, code) in [
        (json!({"Period": 45}), "InvalidParameterValue"),
        (json!({"DatapointsToAlarm": 3}), "InvalidParameterValue"),
        (json!({"Statistic": "p90"}), "InvalidParameterValue"),
        (json!({"TreatMissingData": "sometimes"}), "InvalidParameterValue"),
        (json!({"Threshold": null}), "MissingParameter"),
    ] {
        let mut request = base.clone();
        for (k, v) in change.as_object().unwrap() {
            request[k] = v.clone();
        }
        let request: Value = serde_json::from_str(&request.to_string().replace(",\"Threshold\":null", "")).unwrap();
        assert_eq!(cw.call(Operation::PutMetricAlarm, request).unwrap_err().code, code, "{change}");
    }
    let (action, resources) = cw.action_and_resources(Operation::DeleteAlarms, &json!({"AlarmNames": ["a", "b"]}));
    assert_eq!(action, "cloudwatch:DeleteAlarms");
    assert_eq!(
        resources,
        ["arn:aws:cloudwatch:us-east-1:000000000000:alarm:a", "arn:aws:cloudwatch:us-east-1:000000000000:alarm:b"]
    );
    assert_eq!(cw.action_and_resources(Operation::PutMetricData, &json!({})).1, ["*"]);
}
