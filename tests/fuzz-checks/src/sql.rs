//! AWS IoT SQL rule statements and substitution templates, through the parser CreateTopicRule
//! uses and the evaluator the rules engine runs on each message.

use cloud_api::rules::{self, Item, Message, Output, Projection, Template};

use crate::{Outcome, split_nul};

/// The payload a statement is run on when the input does not give one.
const PAYLOAD: &[u8] = br#"{"deviceid":"iot123","temp":54.98,"n":-7,"s":"5","b":true,"z":null,"coords":{"latitude":47.6,"longitude":-122.3},"e":[{"n":"temperature","v":22.5},{"n":"light","v":135},7,"x",[1,2]]}"#;

/// Feeds `sql` [`\0` `payload` [`\0` `template`]] to `cloud_api::rules::parse` (what
/// CreateTopicRule checks), then evaluates an accepted statement on a message with the fixed
/// JSON payload above and on one with `payload` (JSON or not), on a Basic Ingest topic and a
/// plain one; `template` (or, without one, the SQL text itself) goes through
/// `Template::parse` and `render` as an action parameter would.
///
/// Checks: evaluation is deterministic (the same message gives the same output, `newuuid()` and
/// `rand()` included) and its output serializes; a SELECT list without `*` gives a JSON object;
/// a template without `${` renders to itself.
pub fn iot_sql(data: &[u8]) -> Outcome {
    let (sql, rest) = split_nul(data);
    let (payload, template) = match rest {
        Some(rest) => split_nul(rest),
        None => (PAYLOAD, None),
    };
    let Ok(sql) = std::str::from_utf8(sql) else { return Outcome::Rejected };

    let template_text = template.and_then(|t| std::str::from_utf8(t).ok()).unwrap_or(sql);
    check_template(template_text, payload);

    let Ok(statement) = rules::parse(sql) else { return Outcome::Rejected };
    for topic in ["dt/pump/site-1/telemetry", "$aws/rules/PumpRule/dt/pump/site-1"] {
        statement.matches_topic(topic);
        for payload in [PAYLOAD, payload] {
            let mut message = Message::new(topic, payload);
            message.client_id = Some("site-1");
            message.timestamp_ms = 1_765_000_000_000;
            message.random_seed = 42;
            let first = rules::evaluate(&statement, &message);
            assert_eq!(first, rules::evaluate(&statement, &message), "evaluation is deterministic");
            if let Ok(Some(output)) = first {
                output.to_bytes();
                let items_without_star = matches!(&statement.select,
                    Projection::Items(items) if !items.iter().any(|i| matches!(i, Item::Star)));
                if items_without_star {
                    assert!(
                        matches!(output, Output::Json(serde_json::Value::Object(_))),
                        "a SELECT list without * gives an object: {output:?}"
                    );
                }
            }
        }
    }
    Outcome::Accepted
}

fn check_template(text: &str, payload: &[u8]) {
    let Ok(template) = Template::parse(text) else { return };
    let message = Message::new("dt/pump/site-1/telemetry", payload);
    if let Ok(rendered) = template.render(&message)
        && !text.contains("${")
    {
        assert_eq!(rendered, text, "a template without ${{ renders to itself");
    }
}
