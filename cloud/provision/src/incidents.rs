//! `provision incidents confirm`: an operator's finding about a raised anomaly, recorded on its
//! incident row (DynamoDB `UpdateItem`, Amazon DynamoDB API Reference). The retraining pipeline
//! labels windows only from these confirmations: the raises themselves are the model's own
//! opinions (`docs/ml.md`, "Retraining from the fleet's data").

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{ProvisionError, aws};

/// What the operator found when they looked at the pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Cause {
    /// Worn bearing.
    BearingWear,
    /// Cavitation.
    Cavitation,
    /// Overheating.
    Overheating,
    /// A frozen transmitter.
    StuckSensor,
    /// Nothing was wrong: the raise was a false alarm.
    FalseAlarm,
}

impl Cause {
    /// As stored in `confirmedCause` (the dataset's class names, and `false_alarm`).
    pub fn name(self) -> &'static str {
        match self {
            Cause::BearingWear => "bearing_wear",
            Cause::Cavitation => "cavitation",
            Cause::Overheating => "overheating",
            Cause::StuckSensor => "stuck_sensor",
            Cause::FalseAlarm => "false_alarm",
        }
    }
}

/// One confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// The incidents table.
    pub table: String,
    /// The pump's thing (the row's partition key).
    pub thing: String,
    /// The raised row's sort key (`{ts}#{id}#raised`).
    pub at: String,
    /// What was found.
    pub cause: Cause,
    /// Who found it.
    pub by: Option<String>,
    /// When, epoch ms.
    pub confirmed_at: i64,
}

/// Records `c` on its incident row. Only a raised row that exists is updated; a second
/// confirmation replaces the first (the operator changed their mind).
pub async fn confirm(db: &aws_sdk_dynamodb::Client, c: &Confirmation) -> Result<(), ProvisionError> {
    if !c.at.ends_with("#raised") {
        return Err(ProvisionError::InvalidInput(format!(
            "--at {:?} is not a raised incident's key ({{ts}}#{{id}}#raised): confirm the raise, not its clear",
            c.at
        )));
    }
    let mut request = db
        .update_item()
        .table_name(&c.table)
        .key("thing", AttributeValue::S(c.thing.clone()))
        .key("at", AttributeValue::S(c.at.clone()))
        .condition_expression("attribute_exists(thing) AND active = :raised")
        .expression_attribute_values(":raised", AttributeValue::Bool(true))
        .expression_attribute_values(":cause", AttributeValue::S(c.cause.name().to_owned()))
        .expression_attribute_values(":when", AttributeValue::N(c.confirmed_at.to_string()));
    request = match &c.by {
        Some(by) => request
            .update_expression("SET confirmedCause = :cause, confirmedAt = :when, confirmedBy = :by")
            .expression_attribute_values(":by", AttributeValue::S(by.clone())),
        None => request.update_expression("SET confirmedCause = :cause, confirmedAt = :when REMOVE confirmedBy"),
    };
    match request.send().await.map_err(aws("UpdateItem")) {
        Err(e) if e.aws_code() == Some("ConditionalCheckFailedException") => Err(ProvisionError::InvalidInput(
            format!("no raised incident of {} at {:?} in {}: nothing was changed", c.thing, c.at, c.table),
        )),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn every_cause_is_stored_under_the_name_the_command_line_takes() {
        for cause in Cause::value_variants() {
            let flag = cause.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), cause.name());
        }
        assert!(Cause::from_str("meltdown", false).is_err());
    }
}
